"""The web app in a real browser (headless Chromium) against a real `photogram serve`.

Two people sign up; one posts a photo with a filter, the other follows, sees it in the
feed, likes it and comments; the first sees the notifications. Screenshots of the feed,
a profile and the upload page are kept under the test's temporary directory and copied to
``test-artifacts/screenshots/`` at the repository root.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pyvips
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright
from playwright.async_api import expect as playwright_expect

from tests.accounts.images import quadrant_jpeg
from tests.api import PASSWORD
from tests.server import running_server

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1200, "height": 900}

expect = playwright_expect
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("web")) as url:
        yield url


@pytest.fixture(scope="module")
async def chromium(base_url: str) -> AsyncIterator[Browser]:
    # After the server (it is torn down first): no open connection keeps the server waiting.
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # Root in a container has no user namespace for Chromium's sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield browser
        await browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("screenshots")
    yield directory
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for shot in directory.glob("*.png"):
        shutil.copy2(shot, ARTIFACTS / shot.name)


class Person:
    """One person's browser window, failing the test on any script error or CSP report."""

    def __init__(self, context: BrowserContext, page: Page, base_url: str) -> None:
        self.context = context
        self.page = page
        self.base_url = base_url
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    async def goto(self, path: str) -> None:
        response = await self.page.goto(self.base_url + path)
        assert response is not None
        assert response.status < 400, f"{path}: {response.status}"

    async def sign_up(self, username: str) -> None:
        await self.goto("/signup")
        page = self.page
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("E-mail address").fill(f"{username}@example.com")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_label("I agree").check()
        await page.get_by_role("button", name="Sign up").click()
        await expect(page.get_by_role("heading", name=f"Welcome, {username}")).to_be_visible()


async def open_person(browser: Browser, base_url: str, viewport: dict[str, int]) -> Person:
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    return Person(context, await context.new_page(), base_url)


async def shown_pixels(person: Person, img_selector: str) -> list[float]:
    """The average colour of the photo the browser shows at ``img_selector``, and checks
    that it is not a colour photo any more (after a black and white filter)."""
    url = await person.page.locator(img_selector).first.evaluate("img => img.currentSrc")
    response = await person.context.request.get(url)
    assert response.ok
    image = pyvips.Image.new_from_buffer(await response.body(), "")
    return [image[band].avg() for band in range(image.bands)]


async def test_two_people_share_like_and_comment(
    chromium: Browser, base_url: str, screenshots: Path, tmp_path: Path
) -> None:
    alice = await open_person(chromium, base_url, DESKTOP)
    bob = await open_person(chromium, base_url, PHONE)
    try:
        await _scenario(alice, bob, screenshots, tmp_path)
        assert alice.problems == []
        assert bob.problems == []
    finally:
        await alice.context.close()
        await bob.context.close()


async def _scenario(alice: Person, bob: Person, screenshots: Path, tmp_path: Path) -> None:
    pier, boat = tmp_path / "pier.jpg", tmp_path / "boat.jpg"
    pier.write_bytes(quadrant_jpeg(1200, 900))
    boat.write_bytes(quadrant_jpeg(900, 1200))
    described = "article img[alt='A red and blue test card']"

    # Alice signs up and posts two photos with the Moon filter (black and white).
    await alice.sign_up("alice")
    page = alice.page
    await page.get_by_role("link", name="New post").click()
    await page.get_by_label("Photos").set_input_files([str(pier), str(boat)])
    await page.get_by_label("Describe photo 1").fill("A red and blue test card")
    await page.get_by_label("Describe photo 2").fill("The same card, standing")
    await page.get_by_text("Moon", exact=True).click()
    await expect(page.locator(".preview img").first).to_have_class("f-moon")
    await page.get_by_label("Caption").fill("Evening at the pier #sunset")
    await page.screenshot(path=str(screenshots / "upload.png"), full_page=True)
    await page.get_by_role("button", name="Share").click()
    await expect(page.get_by_role("heading", name="Post by alice")).to_be_visible()
    post_url = page.url
    picture = page.locator(described)
    await expect(picture).to_be_visible()
    assert await picture.evaluate("img => img.complete && img.naturalWidth > 0")
    srcset = await picture.get_attribute("srcset") or ""
    assert len(srcset.split(",")) == 4, srcset  # 320, 640, 1080 and the original
    red, green, blue = await shown_pixels(alice, described)
    # The filter was applied for real: black and white.
    assert abs(red - blue) < 8
    assert abs(red - green) < 8

    # Bob, on a phone, signs up, finds Alice and follows her.
    await bob.sign_up("bob")
    page = bob.page
    await bob.goto("/@alice")
    await page.get_by_role("button", name="Follow").click()
    await expect(page.get_by_role("button", name="Unfollow")).to_be_visible()
    await expect(page.get_by_role("link", name="1 follower")).to_be_visible()
    await page.screenshot(path=str(screenshots / "profile.png"), full_page=True)

    # Her post is in his feed: he pages through its photos and likes it in place.
    await page.get_by_role("link", name="Home").click()
    card = page.locator("article", has_text="Evening at the pier")
    await expect(card).to_be_visible()
    await expect(card.get_by_role("link", name="#sunset")).to_be_visible()
    await card.get_by_role("button", name="Next photo").click()
    await expect(card.get_by_role("img", name="The same card, standing")).to_be_in_viewport()
    await expect(card.get_by_role("button", name="Next photo")).to_be_hidden()  # the last
    like = card.get_by_role("button", name="Like")
    await expect(like).to_have_attribute("aria-pressed", "false")
    await like.click()
    await expect(like).to_have_attribute("aria-pressed", "true")
    await expect(card.get_by_text("1 like")).to_be_visible()
    await page.reload()
    await expect(card.get_by_role("button", name="Like")).to_have_attribute("aria-pressed", "true")
    await expect(card.locator(".photo.loaded").first).to_be_visible()  # placeholder gave way
    await page.screenshot(path=str(screenshots / "feed.png"), full_page=True)

    # He comments, from the keyboard.
    await card.get_by_role("link", name="Comment").click()
    assert page.url.startswith(post_url)
    await page.get_by_label("Add a comment").fill("Lovely light @alice")
    await page.get_by_label("Add a comment").press("Tab")
    await page.keyboard.press("Enter")
    await expect(page.locator(".comment", has_text="Lovely light")).to_be_visible()
    await expect(page.get_by_role("heading", name="1 comment")).to_be_visible()

    # Alice is told about all of it.
    await alice.goto("/notifications")
    notices = alice.page.locator(".notification")
    await expect(notices.filter(has_text="started following you")).to_have_count(1)
    await expect(notices.filter(has_text="liked your post")).to_have_count(1)
    await expect(notices.filter(has_text="commented: Lovely light")).to_have_count(1)
    await alice.page.screenshot(path=str(screenshots / "notifications.png"), full_page=True)

    # Signing out ends the session.
    await alice.page.get_by_role("button", name="Sign out").click()
    await expect(alice.page.get_by_role("heading", name="Sign in")).to_be_visible()
    await alice.goto("/notifications")
    await expect(alice.page.get_by_role("heading", name="Sign in")).to_be_visible()
