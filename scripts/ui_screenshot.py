"""
The README's screenshot of `harivo ui` (docs/images/ui.png): the app on the embedded model, one video generated in
headless Chromium, the page captured.

    python scripts/ui_screenshot.py [--output docs/images/ui.png]
"""

import argparse
import shutil
import socket
import tempfile
import time

from playwright.sync_api import sync_playwright

from harivo.ui import launch

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="docs/images/ui.png")
    parser.add_argument("--prompt", default="a large red circle moving right on a striped black background")
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        app = launch({}, folder, port=port, block=False)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1200})
                page.goto(app.local_url)
                page.wait_for_selector("#prompt textarea", timeout=60_000)
                page.fill("#prompt textarea", args.prompt)
                page.click("#generate")
                page.wait_for_selector("#video video", timeout=300_000)
                time.sleep(1.5)  # a few frames into the loop
                page.evaluate("window.scrollTo(0, 0)")  # the whole form, from its top
                page.screenshot(path=args.output)
                browser.close()
        finally:
            app.close()
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
