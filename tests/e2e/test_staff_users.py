"""Staff user management in real Chromium: an admin (2FA sign-in through the login form)
changes a user's role on /staff/users; the change is audited with its from/to, and the admin's
own row offers no role editor (the API refuses a change of one's own role). The page is
screenshotted at phone and desktop widths and checked with axe-core."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from valkey.asyncio import Valkey

from tests.e2e.pages import audit, staff_person
from tests.helpers import scalar
from tests.integration.rooms.conftest import AppServer
from tests.integration.rooms.people import sign_up
from tipstream.accounts import service as accounts
from tipstream.db import Conn

pytestmark = pytest.mark.slow


async def test_admin_changes_a_role_in_user_management(
    web_server: AppServer, new_person: Any, axe_source: str, db: Conn, kv: Valkey
) -> None:
    app_server = web_server
    target = await sign_up(app_server, "viewer", tag=f"promo{uuid.uuid4().hex[:6]}")
    name = target.user["display_name"]
    admin, admin_id = await staff_person(app_server, new_person, db, kv, "admin", "/staff/users")
    page = admin.page
    row = page.locator("[data-staff] tbody tr").filter(has_text=target.email)
    await row.wait_for()
    assert "viewer" in await row.get_by_label(f"Role of {name}", exact=True).input_value()

    # One's own row shows the role, with nothing to change it.
    own = page.locator("[data-staff] tbody tr").filter(has_text="admin (you)")
    await own.wait_for()
    assert await own.get_by_role("combobox").count() == 0
    await audit(admin, axe_source, "staff-users")

    await row.get_by_label(f"Role of {name}", exact=True).select_option("moderator")
    await row.get_by_role("button", name=f"Save role of {name}").click()
    await page.locator("[data-role-state]").filter(has_text=f"{name} is now moderator").wait_for()
    await page.wait_for_function(
        """(email) => [...document.querySelectorAll('[data-staff] tbody tr')].some(
            tr => tr.textContent.includes(email) && tr.querySelector('select').value === 'moderator'
        )""",
        arg=target.email,
    )
    assert app_server.settings is not None
    assert (await accounts.get_user(db, target.id)).role == "moderator"
    audited = await scalar(
        db,
        """SELECT details FROM audit_logs WHERE action = 'user.role_changed'
           AND target_id = %s AND actor_id = %s""",
        (str(target.id), admin_id),
    )
    assert audited == {"from": "viewer", "to": "moderator"}
    assert admin.csp_violations() == []
