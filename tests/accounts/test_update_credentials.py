"""PATCH /api/v1/accounts/update_credentials, and the avatars it stores and serves."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pyvips
from sqlalchemy import select

from photogram.accounts.api import FORM_OVERHEAD
from photogram.db.metadata import media_objects
from tests.accounts.images import (
    gradient,
    hostile_uploads,
    is_blue,
    is_red,
    quadrant_jpeg,
    with_exif,
)
from tests.accounts.support import (
    PUBLIC_URL,
    avatar_dir,
    settings_with_media,
    stored_avatars,
)
from tests.api import Client, api_client, bearer
from tests.conftest import MakeSettings

UPDATE = "/api/v1/accounts/update_credentials"


def media_path(url: str) -> str:
    assert url.startswith(PUBLIC_URL + "/"), url
    return urlsplit(url).path


async def test_form_fields(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        alice = await client.sign_up("alice")
        response = await client.patch(
            UPDATE,
            headers=alice.headers,
            data={
                "display_name": "  Alice Liddell  ",
                "note": "Down the <rabbit> hole.\n\nSecond paragraph",
                "locked": "true",
                "discoverable": "0",
            },
        )
        assert response.status_code == 200, response.text
        me = response.json()
        assert me["id"] == alice.id
        assert me["display_name"] == "Alice Liddell"
        assert me["note"] == "<p>Down the &lt;rabbit&gt; hole.</p><p>Second paragraph</p>"
        assert me["source"]["note"] == "Down the <rabbit> hole.\n\nSecond paragraph"
        assert me["locked"] is True
        assert me["source"]["privacy"] == "private"
        assert me["discoverable"] is False

        # What was stored is what everyone sees.
        public = (await client.get(f"/api/v1/accounts/{alice.id}")).json()
        assert public["display_name"] == "Alice Liddell"
        assert public["locked"] is True
        assert "source" not in public
        again = (
            await client.get("/api/v1/accounts/verify_credentials", headers=alice.headers)
        ).json()
        assert again == me


async def test_json_body_and_partial_updates(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        alice = await client.sign_up("alice")
        first = await client.patch(
            UPDATE, headers=alice.headers, json={"locked": True, "display_name": "Ally"}
        )
        assert first.status_code == 200, first.text
        # Only what is sent changes; "1"/"false" strings are booleans too.
        second = await client.patch(UPDATE, headers=alice.headers, data={"discoverable": "false"})
        body = second.json()
        assert (body["locked"], body["display_name"], body["discoverable"]) == (True, "Ally", False)
        third = await client.patch(UPDATE, headers=alice.headers, data={"locked": "0"})
        assert third.json()["locked"] is False
        assert third.json()["source"]["privacy"] == "public"
        # An empty form field leaves a boolean alone; an empty name clears the name.
        fourth = await client.patch(
            UPDATE, headers=alice.headers, data={"locked": "", "display_name": ""}
        )
        assert fourth.json()["locked"] is False
        assert fourth.json()["display_name"] == ""
        # Nothing sent: the account as it is.
        same = await client.patch(UPDATE, headers=alice.headers)
        assert same.status_code == 200
        assert same.json()["discoverable"] is False


async def test_limits_and_bad_values(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        alice = await client.sign_up("alice")
        ok = await client.patch(
            UPDATE, headers=alice.headers, data={"display_name": "é" * 30, "note": "n" * 500}
        )
        assert ok.status_code == 200, ok.text

        refusals = {
            "display name too long": ({"display_name": "x" * 31}, "Display name is too long"),
            "note too long": ({"note": "x" * 501}, "Note is too long"),
            "NUL in name": ({"display_name": "a\x00b"}, "control characters"),
            "line break in name": ({"display_name": "a\nb"}, "line breaks"),
            "NUL in note": ({"note": "a\x00b"}, "control characters"),
            "locked not a boolean": ({"locked": "maybe"}, "locked"),
            "discoverable not a boolean": ({"discoverable": "2"}, "discoverable"),
            "avatar as text": ({"avatar": "https://example.com/a.png"}, "Avatar must be an image"),
        }
        failures = []
        for case, (form, message) in refusals.items():
            response = await client.patch(UPDATE, headers=alice.headers, data=form)
            if response.status_code != 422 or message not in response.json().get("error", ""):
                failures.append(f"{case}: {response.status_code} {response.text}")
        json_cases = {
            "name not a string": {"display_name": 5},
            "locked not a boolean": {"locked": "perhaps"},
            "name as a list": {"display_name": ["a", "b"]},
        }
        for case, body in json_cases.items():
            response = await client.patch(UPDATE, headers=alice.headers, json=body)
            if response.status_code != 422 or "error" not in response.json():
                failures.append(f"json {case}: {response.status_code} {response.text}")
        assert not failures, "\n".join(failures)

        # Parameters photogram has no use for are ignored, as Mastodon ignores unknown ones.
        extra = await client.patch(
            UPDATE,
            headers=alice.headers,
            data={"bot": "true", "source[privacy]": "unlisted", "fields_attributes[0][name]": "x"},
        )
        assert extra.status_code == 200, extra.text
        # Nothing refused above changed anything.
        me = extra.json()
        assert (me["display_name"], me["note"], me["locked"]) == (
            "é" * 30,
            f"<p>{'n' * 500}</p>",
            False,
        )


async def test_authorization(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        app = await client.register_app()
        alice = await client.sign_up("alice", app)
        reader = bearer(await client.log_in(app, alice.email, "read"))
        writer = bearer(await client.log_in(app, alice.email, "write:accounts"))
        app_token = await client.app_token(app)
        form = {"display_name": "Nope"}

        anonymous = await client.patch(UPDATE, data=form)
        assert anonymous.status_code == 401
        assert "error" in anonymous.json()
        wrong_scope = await client.patch(UPDATE, headers=reader, data=form)
        assert wrong_scope.status_code == 403
        assert "error" in wrong_scope.json()
        app_only = await client.patch(
            UPDATE, headers={"Authorization": f"Bearer {app_token}"}, data=form
        )
        assert app_only.status_code == 422
        assert "error" in app_only.json()
        allowed = await client.patch(UPDATE, headers=writer, data=form)
        assert allowed.status_code == 200
        assert allowed.json()["display_name"] == "Nope"


async def upload(client: Client, headers: dict[str, str], name: str, content: bytes) -> dict:  # type: ignore[type-arg]
    response = await client.patch(
        UPDATE,
        headers=headers,
        data={"display_name": "With avatar"},
        files={"avatar": (name, content, "image/jpeg")},
    )
    return {"status": response.status_code, "body": response.json()}


async def test_avatar_flow(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = await settings_with_media(make_settings, tmp_path)
    async with api_client(settings) as client:
        alice = await client.sign_up("alice")
        before = (
            await client.get("/api/v1/accounts/verify_credentials", headers=alice.headers)
        ).json()
        assert before["avatar"] == f"{PUBLIC_URL}/avatars/original/missing.png"
        default = await client.get(media_path(before["avatar"]))
        assert default.status_code == 200
        assert default.headers["content-type"] == "image/png"
        assert pyvips.Image.new_from_buffer(default.content, "").width == 400

        # Named and typed like a PNG, but a JPEG with orientation and GPS in its EXIF.
        photo = with_exif(quadrant_jpeg(300, 200), orientation=6)
        result = await upload(client, alice.headers, "holiday.png", photo)
        assert result["status"] == 200, result
        me = result["body"]
        assert me["display_name"] == "With avatar"
        assert me["avatar"] == me["avatar_static"]
        path = media_path(me["avatar"])
        assert path.startswith(f"/media/avatars/{alice.id}-")
        assert path.endswith(".jpg")

        served = await client.get(path)
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/jpeg"
        assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert served.headers["x-content-type-options"] == "nosniff"
        etag = served.headers["etag"]
        image = pyvips.Image.new_from_buffer(served.content, "")
        assert image.get("vips-loader") == "jpegload_buffer"
        assert (image.width, image.height) == (400, 400)
        assert not [f for f in image.get_fields() if f.startswith(("exif", "xmp", "iptc", "icc"))]
        assert b"Exif" not in served.content
        # Turned upright (orientation 6): the red corner is now top right.
        assert is_red(image(300, 100)), image(300, 100)
        assert is_blue(image(100, 100)), image(100, 100)

        cached = await client.get(path, headers={"If-None-Match": etag})
        assert cached.status_code == 304
        assert cached.content == b""

        # Everyone sees the new avatar.
        public = (await client.get(f"/api/v1/accounts/{alice.id}")).json()
        assert public["avatar"] == me["avatar"]
        assert stored_avatars(settings) == [path.rsplit("/", 1)[1]]

        # A new avatar gets a new name; the old file goes once the new one is in place.
        second = await upload(client, alice.headers, "b.png", bytes(gradient().pngsave_buffer()))
        assert second["status"] == 200, second
        new_path = media_path(second["body"]["avatar"])
        assert new_path != path
        assert stored_avatars(settings) == [new_path.rsplit("/", 1)[1]]
        assert (await client.get(path)).status_code == 404
        new_avatar = await client.get(new_path)
        assert new_avatar.status_code == 200

        # Recorded like every stored photo: one row, the store's key, the bytes' MD5.
        account_id = int(alice.id)
        async with client.runtime.router.connect_for(account_id) as conn:
            records = (
                await conn.execute(
                    select(media_objects).where(media_objects.c.media_id == account_id)
                )
            ).all()
        assert [(r.variant, r.key, r.store) for r in records] == [
            ("avatar", new_path.removeprefix("/media/"), settings.media_store)
        ]
        assert records[0].md5 == hashlib.md5(new_avatar.content).hexdigest()
        assert records[0].size == len(new_avatar.content)


async def test_hostile_avatars_are_refused(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = await settings_with_media(make_settings, tmp_path)
    async with api_client(settings) as client:
        alice = await client.sign_up("alice")
        failures = []
        for case, (name, content) in hostile_uploads().items():
            result = await upload(client, alice.headers, name, content)
            if result["status"] != 422 or not result["body"].get("error", "").startswith(
                "Validation failed: Avatar"
            ):
                failures.append(f"{case}: {result}")
            if stored_avatars(settings):
                failures.append(f"{case}: left {stored_avatars(settings)}")
        assert not failures, "\n".join(failures)
        # Nothing about the account changed, not even the fields sent alongside.
        me = (await client.get("/api/v1/accounts/verify_credentials", headers=alice.headers)).json()
        assert me["display_name"] == ""
        assert me["avatar"].endswith("/avatars/original/missing.png")


async def test_a_tiny_pixel_budget_refuses_a_real_image(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = await settings_with_media(make_settings, tmp_path, avatar_max_pixels=10_000)
    async with api_client(settings) as client:
        alice = await client.sign_up("alice")
        big = await upload(
            client, alice.headers, "a.png", bytes(gradient(101, 100).pngsave_buffer())
        )
        assert big["status"] == 422
        assert "too large an image" in big["body"]["error"]
        small = await upload(
            client, alice.headers, "a.png", bytes(gradient(100, 100).pngsave_buffer())
        )
        assert small["status"] == 200
        assert len(stored_avatars(settings)) == 1


class EndlessMultipart:
    """A multipart body with a huge avatar, sent without a length; counts what was taken."""

    def __init__(self, boundary: str, chunks: int) -> None:
        self.boundary = boundary
        self.chunks = chunks
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in endless_multipart(self.boundary, self.chunks):
            self.sent += len(part)
            yield part


async def endless_multipart(boundary: str, chunks: int) -> AsyncIterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="avatar"; '
        'filename="huge.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode() + b"\xff\xd8\xff"
    for _ in range(chunks):
        yield b"\x00" * 65536
    yield f"\r\n--{boundary}--\r\n".encode()


async def test_oversized_uploads(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = await settings_with_media(make_settings, tmp_path, avatar_max_bytes=4096)
    async with api_client(settings) as client:
        alice = await client.sign_up("alice")
        # Over the avatar limit, well within the body limit: refused while reading the file.
        over = await upload(client, alice.headers, "a.jpg", bytes(gradient().jpegsave_buffer()))
        assert over["status"] == 422
        assert over["body"]["error"] == "Validation failed: Avatar is larger than 4 KiB"

        # A declared length beyond the body limit: refused before reading anything.
        big_body = b"\xff\xd8\xff" + b"\x00" * 200_000
        declared = await client.patch(
            UPDATE, headers=alice.headers, files={"avatar": ("a.jpg", big_body, "image/jpeg")}
        )
        assert declared.status_code == 422
        assert "larger than 4 KiB" in declared.json()["error"]

        # No declared length (chunked): reading stops once the body limit is passed.
        boundary = "photogramtestboundary"
        body = EndlessMultipart(boundary, chunks=1024)  # 64 MiB on offer
        streamed = await client.patch(
            UPDATE,
            headers={
                **alice.headers,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            content=body,
        )
        assert streamed.status_code == 422, streamed.text
        assert "larger than 4 KiB" in streamed.json()["error"]
        assert body.sent < 4096 + FORM_OVERHEAD + 2 * 65536
        assert stored_avatars(settings) == []

        # At the limit exactly is fine.
        fits = bytes(pyvips.Image.black(8, 8).pngsave_buffer())
        assert len(fits) <= 4096
        ok = await upload(client, alice.headers, "ok.png", fits)
        assert ok["status"] == 200, ok


async def test_media_paths(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = await settings_with_media(make_settings, tmp_path)
    async with api_client(settings) as client:
        avatar_dir(settings).mkdir(parents=True)
        (settings.data_dir / "secret.txt").write_text("secret")
        (avatar_dir(settings) / ".incoming-x.tmp").write_text("half")
        for path in (
            "/media/avatars/1-AAAAAAAAAAAAAAAAAAAAAA.jpg",  # well formed, not there
            "/media/avatars/..%2F..%2Fsecret.txt",
            "/media/avatars/%2e%2e",
            "/media/avatars/.incoming-x.tmp",
            "/media/avatars/",
            "/media/photogram.sqlite3",
            "/media/avatars/1-AAAAAAAAAAAAAAAAAAAAAA.jpg%00.png",
        ):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert b"secret" not in response.content
            assert b"half" not in response.content
        header = await client.get("/headers/original/missing.png")
        assert header.status_code == 200
        assert header.headers["content-type"] == "image/png"
        assert "etag" in header.headers


@pytest.mark.parametrize("method", ["put", "post"])
async def test_only_patch_updates(make_settings: MakeSettings, tmp_path: Path, method: str) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        alice = await client.sign_up("alice")
        response = await client.request(method.upper(), UPDATE, headers=alice.headers)
        assert response.status_code == 405
