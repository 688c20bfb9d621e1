// Every page: the balance in the header and the log-out button.
import { api, refreshBalance } from "./api.js";

const logout = document.querySelector("[data-logout]");
if (logout) {
  logout.addEventListener("click", async () => {
    try {
      await api("POST", "/api/auth/logout");
    } finally {
      window.location.assign("/");
    }
  });
}
refreshBalance();
