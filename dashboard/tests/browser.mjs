// Debian's Chromium, headless, for the browser tests (IPSX_CHROMIUM overrides the path).
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.IPSX_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // Tests run as root in CI containers, where Chromium's sandbox cannot start.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

// Ends the script: the failures on stderr and exit 1, or exit 0.
export function finish(failures) {
  if (failures.length) {
    console.error(failures.join("\n"));
    process.exit(1);
  }
}
