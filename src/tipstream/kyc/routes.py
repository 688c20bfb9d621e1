"""HTTP routes of KYC: a performer's onboarding, and the review queue for moderators and admins
with 2FA. Decrypted documents are served only to reviewers, never cached (Cache-Control:
no-store), and every view is audited."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import Provide
from litestar.params import Parameter

from tipstream.accounts import guards
from tipstream.accounts.service import Principal
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import InvalidInput, Problem
from tipstream.kyc import service, uploads
from tipstream.kyc.schemas import (
    DecisionRequest,
    KycState,
    MrzRequest,
    MrzSuggestion,
    SubmissionDetail,
    SubmissionSummary,
)

PRINCIPAL = {"principal": Provide(guards.provide_principal)}
SubmissionId = Annotated[int, Parameter(gt=0, le=2**63 - 1)]
# Three images of at most kyc.max_image_bytes (10 MB by default) and the text fields; the
# per-image limit is enforced on each file. nginx allows the same on this path.
UPLOAD_BODY_LIMIT = 32 * 1024 * 1024
NO_STORE = {"cache-control": "no-store, private", "pragma": "no-cache"}


class NotMultipart(Problem):
    status, slug, title = 415, "unsupported-media-type", "Send multipart/form-data"


async def read_multipart(
    request: Request[Any, Any, Any],
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Text fields and files of a multipart form; a field sent twice is refused."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise NotMultipart("the onboarding form is multipart/form-data (text fields and images)")
    try:
        form = await request.form()
    except UnicodeDecodeError:
        # Litestar decodes a part without a filename as text: bytes that are no UTF-8 there
        # (an image sent without its filename, a mangled field) are the client's error.
        raise InvalidInput(
            "a form field is not UTF-8 text (send images as files, with a filename)"
        ) from None
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for name in form:
        values = form.getall(name)
        if len(values) != 1:
            raise InvalidInput(f"field {name!r} sent more than once")
        value = values[0]
        if isinstance(value, UploadFile):
            # The client's filename and content type are ignored: the content decides.
            data = await value.read()
            await value.close()
            # A browser sends an empty part for a file input left empty: no file was given.
            if data or value.filename:
                files[name] = data
        elif name in service.IMAGE_FIELDS and value == "":
            continue  # the same empty part, parsed as a text field (no filename)
        else:
            fields[name] = value
    return fields, files


class OnboardingController(Controller):
    path = "/api/kyc"
    tags = ["kyc"]
    dependencies = PRINCIPAL

    @get("/me", guards=[guards.performer])
    async def me(self, principal: Principal, conn: Conn, settings: Settings) -> KycState:
        """Your verification: status (not_started, submitted, approved, rejected,
        needs_resubmission, expired), the reviewer's reason, the document's expiry."""
        return await service.state(conn, settings, principal.user.id)

    @post(
        "/submission",
        guards=[guards.performer],
        status_code=201,
        request_max_body_size=UPLOAD_BODY_LIMIT,
    )
    async def submit(
        self,
        request: Request[Any, Any, Any],
        principal: Principal,
        conn: Conn,
        settings: Settings,
        ip: str,
    ) -> KycState:
        """Submit your identity verification as multipart/form-data: legal_name,
        date_of_birth (YYYY-MM-DD), country (ISO 3166 alpha-2), document_type (passport,
        id_card, driving_licence), document_number, document_expiry, agreement_version,
        accept_agreement=true, optionally mrz (the 2 or 3 lines at the bottom of the document);
        images front, back (not for passports) and selfie (you holding the document), JPEG,
        PNG or WebP."""
        fields, files = await read_multipart(request)
        form = service.parse_form(fields)
        return await service.submit(
            conn, settings, user_id=principal.user.id, form=form, files=files, ip=ip
        )


class ReviewController(Controller):
    path = "/api/kyc/review"
    tags = ["kyc review"]
    dependencies = PRINCIPAL

    @get("/", guards=[guards.moderator])
    async def queue(
        self,
        conn: Conn,
        status: Annotated[
            str,
            Parameter(pattern="^(submitted|approved|rejected|needs_resubmission|all)$"),
        ] = "submitted",
        user_id: Annotated[int | None, Parameter(gt=0, le=2**63 - 1)] = None,
        after: Annotated[int, Parameter(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> list[SubmissionSummary]:
        """Submissions oldest first (default: those waiting for review); for the next page pass
        ?after=<the last id seen>."""
        return await service.queue(
            conn,
            status=None if status == "all" else status,
            user_id=user_id,
            limit=limit,
            after_id=after,
        )

    @get("/{submission_id:int}", guards=[guards.moderator])
    async def detail(
        self,
        submission_id: SubmissionId,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        ip: str,
    ) -> Response[SubmissionDetail]:
        """One submission with its decrypted form (audited)."""
        found = await service.detail(
            conn, settings, submission_id, actor_id=principal.user.id, ip=ip
        )
        return Response(found, headers=NO_STORE)

    # Documented as what it sends: every stored image is re-encoded as JPEG.
    @get(
        "/{submission_id:int}/images/{name:str}",
        guards=[guards.moderator],
        media_type=uploads.OUTPUT_TYPE,
    )
    async def image(
        self,
        submission_id: SubmissionId,
        name: str,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        ip: str,
    ) -> Response[bytes]:
        """One decrypted image (front, back, selfie); audited, never cached."""
        if name not in service.IMAGE_FIELDS:
            raise service.ImageNotFound("images are front, back and selfie")
        media_type, data = await service.image(
            conn, settings, submission_id, name, actor_id=principal.user.id, ip=ip
        )
        # Shown only as an image: no script, no plugin, nothing it could load.
        headers = {
            **NO_STORE,
            "content-disposition": "inline",
            "content-security-policy": "default-src 'none'; sandbox",
        }
        return Response(data, media_type=media_type, headers=headers)

    @post("/{submission_id:int}/decision", guards=[guards.moderator], status_code=200)
    async def decide(
        self,
        submission_id: SubmissionId,
        data: DecisionRequest,
        principal: Principal,
        conn: Conn,
        ip: str,
    ) -> SubmissionSummary:
        """approve, reject (reason) or needs_resubmission (reason); audited, and the performer
        sees it at GET /api/kyc/me."""
        return await service.decide(
            conn,
            submission_id,
            data.decision,
            reason=data.reason,
            actor_id=principal.user.id,
            ip=ip,
        )

    @get("/{submission_id:int}/mrz/suggestion", guards=[guards.moderator])
    async def mrz_suggestion(
        self,
        submission_id: SubmissionId,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        ip: str,
    ) -> Response[MrzSuggestion]:
        """The MRZ OCR (tesseract, where installed) reads off the document images, valid by its
        check digits, and which form fields it disagrees with; audited, never cached. Confirm
        it by POSTing it to .../mrz."""
        found = await service.mrz_suggestion(
            conn, settings, submission_id, actor_id=principal.user.id, ip=ip
        )
        return Response(found, headers=NO_STORE)

    @post("/{submission_id:int}/mrz", guards=[guards.moderator], status_code=200)
    async def mrz(
        self,
        submission_id: SubmissionId,
        data: MrzRequest,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        ip: str,
    ) -> SubmissionSummary:
        """Check the MRZ you read off the document: check digits, then name, date of birth,
        number and expiry against the form; the findings join the submission's flags."""
        return await service.check_mrz(
            conn, settings, submission_id, data.mrz, actor_id=principal.user.id, ip=ip
        )


ROUTES = [OnboardingController, ReviewController]
