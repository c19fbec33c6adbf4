"""App registration limits and the RFC 8414 metadata clients discover endpoints with."""

from __future__ import annotations

from tests.api import api_client
from tests.conftest import MakeSettings


async def test_metadata_lists_grants_and_endpoints(make_settings: MakeSettings) -> None:
    settings = await make_settings(public_url="https://photos.example/")
    async with api_client(settings) as client:
        response = await client.get("/.well-known/oauth-authorization-server")
        assert response.status_code == 200, response.text
        meta = response.json()
        assert meta["issuer"] == "https://photos.example/"
        assert meta["authorization_endpoint"] == "https://photos.example/oauth/authorize"
        assert meta["token_endpoint"] == "https://photos.example/oauth/token"
        assert meta["revocation_endpoint"] == "https://photos.example/oauth/revoke"
        assert meta["app_registration_endpoint"] == "https://photos.example/api/v1/apps"
        assert set(meta["grant_types_supported"]) == {
            "authorization_code",
            "password",
            "client_credentials",
            "refresh_token",
        }
        assert meta["response_types_supported"] == ["code"]
        assert meta["response_modes_supported"] == ["query"]
        assert set(meta["code_challenge_methods_supported"]) == {"S256", "plain"}
        assert {"read", "write", "follow", "push", "read:accounts"} <= set(meta["scopes_supported"])
        assert set(meta["token_endpoint_auth_methods_supported"]) == {
            "client_secret_basic",
            "client_secret_post",
        }

        # Every advertised endpoint is there (a bare GET of the page is a 400, not a 404).
        for path, method in (
            ("/oauth/authorize", "GET"),
            ("/oauth/token", "POST"),
            ("/oauth/revoke", "POST"),
            ("/api/v1/apps", "POST"),
        ):
            answered = await client.request(method, path)
            assert answered.status_code not in (404, 405), path


async def test_app_registration_refuses_bad_redirect_uris(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        for uris in (
            "",
            "not a uri",
            "https://client.example/cb#fragment",
            "https://client.example/" + "a" * 2000,
        ):
            response = await client.post(
                "/api/v1/apps", data={"client_name": "x", "redirect_uris": uris}
            )
            assert response.status_code == 422, (uris[:40], response.text)
            assert response.json()["error"]
        longest = "https://client.example/" + "a" * (2000 - len("https://client.example/"))
        ok = await client.post("/api/v1/apps", data={"client_name": "x", "redirect_uris": longest})
        assert ok.status_code == 200, ok.text
        assert ok.json()["redirect_uris"] == [longest]
