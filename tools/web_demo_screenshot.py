#!/usr/bin/env python
"""Drive the web demo (``demo/app.py``) in headless Chromium: upload an image, type a
vocabulary, segment, and save a screenshot of the page.

    python tools/web_demo_screenshot.py --image toy.jpg --vocabulary "red checkered object, ..." \\
        --output docs/images/web_demo.png [--config-file CONFIG --weights model_final.pth | --url http://127.0.0.1:7860]

Without ``--url`` it starts ``demo/app.py`` on a free loopback port with the given model (the
quick start's by default) and stops it afterwards. The browser is Debian's Chromium
(``apt-get install chromium``) driven through Playwright (``pip install playwright``; no
``playwright install``: the system browser is used). The test suite drives the page with the
same functions.
"""
import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
# Without the network flags Chromium keeps trying to reach Google's hosts, which a machine
# without internet access refuses; --no-sandbox lets it run as root (CI containers).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(args, port: int = 0, env=None, log_path=None, timeout: float = 180.0):
    """``demo/app.py ARGS --port PORT`` in a subprocess, yielded as its URL once it answers;
    stopped on exit. Its output goes to ``log_path`` (shown in the error when it dies first)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = log_path or os.devnull
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, os.path.join(ROOT, "demo", "app.py"), *args, "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                text = open(log_path).read() if log_path != os.devnull else ""
                raise RuntimeError(f"demo/app.py exited with status {process.returncode} before serving:\n{text}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo/app.py did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch_chromium(playwright):
    """Debian's Chromium, headless, through Playwright."""
    if not os.path.isfile(CHROMIUM):
        raise FileNotFoundError(f"{CHROMIUM} not found: apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def upload(page, image_path: str) -> None:
    """Put ``image_path`` into the page's image input (removing a previous image first)."""
    remove = page.locator("#zsmask-image button[aria-label='Remove Image']")
    if remove.count():
        remove.first.click()
    page.locator("#zsmask-image input[type=file]").set_input_files(image_path)
    # the preview points at the server's copy once the upload has finished
    page.wait_for_selector("#zsmask-image img[src*='/file=']", timeout=30000, state="attached")


def segment(page, image_path: str, vocabulary: str, timeout_ms: int = 120000) -> dict:
    """Upload, type ``vocabulary``, press Segment and wait for the result. Returns the result
    image's URL, the download links, the legend's and unseen list's text, and the result's number
    (the app counts its segmentations: a repeated request gives the same picture, hence URL)."""
    summary = page.locator("#zsmask-summary")
    previous = summary.get_attribute("data-result") if summary.count() else None
    upload(page, image_path)
    page.locator("#zsmask-vocabulary textarea").fill(vocabulary)
    page.locator("#zsmask-run").click()
    try:
        page.wait_for_function(
            """previous => { const summary = document.querySelector('#zsmask-summary');
                             return summary && summary.dataset.result !== previous
                                    && document.querySelector('#zsmask-result img')
                                    && document.querySelectorAll('#zsmask-files a').length >= 2; }""",
            arg=previous, timeout=timeout_ms)
    except Exception as e:  # playwright's TimeoutError: say what the page shows instead
        raise RuntimeError(f"no result within {timeout_ms / 1000:.0f} s; the page says: {page_messages(page)!r}") from e
    return {
        "result_url": page.locator("#zsmask-result img").get_attribute("src"),
        "files": [a.get_attribute("href") for a in page.locator("#zsmask-files a").all()],
        "legend": page.locator("#zsmask-legend").inner_text(),
        "unseen": page.locator("#zsmask-unseen").inner_text(),
        "number": int(page.locator("#zsmask-summary").get_attribute("data-result")),
    }


def page_messages(page) -> str:
    """The text of the page's error and info toasts ("" when there are none)."""
    toasts = page.locator("[data-testid='toast-body'], .toast-body")
    return " | ".join(t.inner_text() for t in toasts.all())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True)
    parser.add_argument("--vocabulary", help="comma list typed into the page (default: the model's)")
    parser.add_argument("--output", required=True, help="the screenshot (PNG)")
    parser.add_argument("--url", help="an app already running (default: start demo/app.py)")
    parser.add_argument("--config-file")
    parser.add_argument("--weights")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    app_args = []
    if args.config_file:
        app_args += ["--config-file", args.config_file]
    if args.weights:
        app_args += ["--weights", args.weights]
    served = contextlib.nullcontext(args.url) if args.url else serve_app(app_args, log_path=args.output + ".log")
    with served as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(url)
        page.wait_for_selector("#zsmask-run")
        vocabulary = args.vocabulary or page.locator("#zsmask-vocabulary textarea").input_value()
        found = segment(page, os.path.abspath(args.image), vocabulary)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        page.screenshot(path=args.output, full_page=True)
        browser.close()
    print(found["legend"])
    print(f"screenshot: {args.output}")
    if not args.url and os.path.exists(args.output + ".log"):
        os.remove(args.output + ".log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
