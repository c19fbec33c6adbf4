"""Uploading photos over HTTP, as a Mastodon client does, and fetching them back."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import pyvips
from sqlalchemy import select

from photogram.db.metadata import media_attachments, media_objects
from photogram.media.processing import VARIANTS
from photogram.settings import Settings
from tests.accounts.images import quadrant_jpeg, with_exif
from tests.api import Client, User, api_client
from tests.conftest import MakeSettings
from tests.media.corpus import corpus
from tests.media.s3server import create_bucket, list_raw_keys
from tests.media.test_stores import s3_config

METADATA = ("exif-data", "xmp-data", "iptc-data", "icc-profile-data")


async def _settings(make_settings: MakeSettings, tmp_path: Path, **extra: object) -> Settings:
    return await make_settings(media_max_pixels=40_000_000, **extra)


async def _upload(client: Client, user: User, data: bytes, **fields: str) -> dict:  # type: ignore[type-arg]
    response = await client.post(
        "/api/v2/media",
        headers=user.headers,
        files={"file": ("photo.bin", data, "application/octet-stream")},
        data=fields,
    )
    assert response.status_code in (200, 202), response.text
    return response.json()  # type: ignore[no-any-return]


async def _fetch(client: Client, url: str) -> bytes:
    parts = urlsplit(url)
    response = await client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert "immutable" in response.headers["cache-control"]
    return response.content


async def test_upload_process_and_serve(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await _settings(make_settings, tmp_path)) as client:
        alice = await client.sign_up("alice")
        # Tagged "rotate 90° clockwise" (6) and carrying GPS coordinates.
        photo = with_exif(quadrant_jpeg(3000, 2000), 6)
        attachment = await _upload(
            client, alice, photo, description="A red corner", focus="0.5,-0.25"
        )
        assert attachment["type"] == "image"
        assert attachment["description"] == "A red corner"
        assert attachment["meta"]["focus"] == {"x": 0.5, "y": -0.25}
        assert attachment["blurhash"]
        # Upright after the EXIF rotation: portrait, longest side 2048.
        assert attachment["meta"]["original"]["width"] == 1365
        assert attachment["meta"]["original"]["height"] == 2048
        full = await _fetch(client, attachment["url"])
        image = pyvips.Image.new_from_buffer(full, "")
        assert (image.width, image.height) == (1365, 2048)
        for field in METADATA:
            assert field not in image.get_fields()

        again = await client.get(f"/api/v1/media/{attachment['id']}", headers=alice.headers)
        assert again.status_code == 200
        assert again.json()["url"] == attachment["url"]

        # Every variant is stored, its MD5 and size recorded exactly, none with metadata.
        media_id = int(attachment["id"])
        async with client.runtime.router.connect_for(media_id) as conn:
            objects = (
                await conn.execute(
                    select(media_objects).where(media_objects.c.media_id == media_id)
                )
            ).all()
        assert {o.variant for o in objects} == set(VARIANTS)
        for obj in objects:
            data = await client.runtime.store.get(obj.key)
            assert hashlib.md5(data).hexdigest() == obj.md5
            assert len(data) == obj.size
            stored = pyvips.Image.new_from_buffer(data, "")
            assert (stored.width, stored.height) == (obj.width, obj.height)
            assert not any(field in stored.get_fields() for field in METADATA)
        sizes = {o.variant: max(o.width, o.height) for o in objects}
        assert sizes == {"original": 2048, "1080": 1080, "640": 640, "320": 320, "thumb": 150}
        # The upload itself (with its GPS) is gone from the spool once processed.
        assert not list((client.runtime.settings.data_dir / "spool").glob("*"))


async def test_edit_filters_and_ownership(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await _settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        listed = (await client.get("/api/v1/photogram/filters")).json()
        assert {"normal", "clarendon", "juno", "lark", "gingham", "moon"} <= {
            f["id"] for f in listed
        }

        moon = await _upload(client, alice, quadrant_jpeg(), filter="moon")
        pixels = pyvips.Image.new_from_buffer(await _fetch(client, moon["preview_url"]), "")
        assert pixels.bands == 1 or pixels.extract_band(0).avg() == pytest.approx(
            pixels.extract_band(1).avg(), abs=1
        )

        edited = await client.put(
            f"/api/v1/media/{moon['id']}",
            headers=alice.headers,
            data={"description": "Black and white", "focus": "-1,1"},
        )
        assert edited.status_code == 200
        assert edited.json()["description"] == "Black and white"
        for bad in ({"focus": "2,0"}, {"focus": "x"}, {"description": "x" * 1501}):
            refused = await client.put(
                f"/api/v1/media/{moon['id']}", headers=alice.headers, data=bad
            )
            assert refused.status_code == 422
            assert "error" in refused.json()

        # Someone else's upload, or none: the same 404.
        for path in (f"/api/v1/media/{moon['id']}", "/api/v1/media/12345"):
            theirs = await client.get(path, headers=bob.headers)
            assert theirs.status_code == 404
            assert theirs.json() == {"error": "Record not found"}

        unknown = await client.post(
            "/api/v2/media",
            headers=alice.headers,
            files={"file": ("a.jpg", quadrant_jpeg(), "image/jpeg")},
            data={"filter": "sparkles"},
        )
        assert unknown.status_code == 422


async def test_hostile_uploads_are_refused_and_leave_nothing(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = await _settings(make_settings, tmp_path, media_max_bytes=2 * 1024 * 1024)
    async with api_client(settings) as client:
        alice = await client.sign_up("alice")
        hostile = list(corpus())
        assert len(hostile) >= 20
        for name, data, _reason in hostile:
            response = await client.post(
                "/api/v2/media",
                headers=alice.headers,
                # The client's name and type claim a JPEG: only the content counts.
                files={"file": ("photo.jpg", data, "image/jpeg")},
            )
            assert response.status_code == 422, (name, response.text)
            assert set(response.json()) == {"error"}, name
        too_big = await client.post(
            "/api/v2/media",
            headers=alice.headers,
            files={"file": ("big.jpg", b"\xff\xd8" + b"\0" * (3 * 1024 * 1024), "image/jpeg")},
        )
        assert too_big.status_code == 422
        assert "larger than" in too_big.json()["error"]
        missing = await client.post("/api/v2/media", headers=alice.headers, data={"x": "1"})
        assert missing.status_code == 422

        async with client.runtime.router.connect_for(int(alice.id)) as conn:
            rows = (await conn.execute(select(media_attachments.c.id))).all()
        assert rows == []
        assert [o async for o in client.runtime.store.iterate()] == []
        spool = client.runtime.settings.data_dir / "spool"
        assert not spool.exists() or not list(spool.iterdir())


async def test_media_urls_are_signed(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await _settings(make_settings, tmp_path)) as client:
        alice = await client.sign_up("alice")
        attachment = await _upload(client, alice, quadrant_jpeg())
        parts = urlsplit(attachment["url"])
        good = await client.get(f"{parts.path}?{parts.query}")
        assert good.status_code == 200
        cached = await client.get(
            f"{parts.path}?{parts.query}", headers={"If-None-Match": good.headers["etag"]}
        )
        assert cached.status_code == 304
        query = dict(p.split("=", 1) for p in parts.query.split("&"))
        forged = {
            "no signature": parts.path,
            "bad signature": f"{parts.path}?expires={query['expires']}&signature=AAAA",
            "expired": f"{parts.path}?expires=1000&signature={query['signature']}",
            "other object": parts.path.replace("original", "thumb") + f"?{parts.query}",
        }
        for name, url in forged.items():
            response = await client.get(url)
            assert response.status_code == 403, name
            assert response.json() == {"error": "This media URL is invalid or has expired"}


async def test_authorization(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await _settings(make_settings, tmp_path)) as client:
        app = await client.register_app()
        alice = await client.sign_up("alice", app)
        read_only = await client.log_in(app, alice.email, "read")
        for method, path in (("POST", "/api/v2/media"), ("GET", "/api/v1/media/1")):
            assert (await client.request(method, path)).status_code == 401
            denied = await client.request(
                method, path, headers={"Authorization": f"Bearer {read_only}"}
            )
            assert denied.status_code == 403


async def test_photos_in_an_s3_store(tmp_path: Path, s3_endpoint: str) -> None:
    """The same upload with an S3-compatible store: objects land there, URLs are presigned."""
    await create_bucket(s3_endpoint, "photos")
    settings = Settings(
        data_dir=tmp_path,
        media_store="s3",
        media_stores={"s3": s3_config(s3_endpoint, "photos")},  # type: ignore[dict-item]
    )
    async with api_client(settings) as client:
        alice = await client.sign_up("alice")
        attachment = await _upload(client, alice, quadrant_jpeg())
        assert attachment["url"].startswith(s3_endpoint)
        async with httpx.AsyncClient() as http:
            fetched = await http.get(attachment["url"])
        assert fetched.status_code == 200
        media_id = int(attachment["id"])
        async with client.runtime.router.connect_for(media_id) as conn:
            original = (
                await conn.execute(
                    select(media_objects).where(
                        media_objects.c.media_id == media_id, media_objects.c.variant == "original"
                    )
                )
            ).one()
        assert original.store == "s3"
        assert hashlib.md5(fetched.content).hexdigest() == original.md5
        keys = sorted(await list_raw_keys(s3_endpoint, "photos"))
        assert len(keys) == len(VARIANTS)
        assert all(key.startswith(f"{media_id >> 10 & 0x1FFF:04d}/{media_id}/") for key in keys)
