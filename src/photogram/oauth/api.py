"""OAuth 2 endpoints and app registration (``/api/v1/apps``, ``/oauth/token``, …)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from photogram.oauth import actions
from photogram.oauth.actions import OAuthError
from photogram.oauth.schemas import (
    AppForm,
    Application,
    CredentialApplication,
    OAuthErrorBody,
    RevokeForm,
    Token,
    TokenForm,
    render_app,
    render_token,
)
from photogram.web.auth import ALL_SCOPES, require_token
from photogram.web.auth import Token as AccessToken
from photogram.web.body import body_openapi, form_or_json
from photogram.web.deps import RuntimeDep
from photogram.web.errors import not_found

api = APIRouter()

OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorBody, "description": "The grant or request is invalid."},
    401: {"model": OAuthErrorBody, "description": "Client authentication failed."},
    422: {"model": OAuthErrorBody, "description": "A parameter is invalid."},
}
GRANT_TYPES = ("authorization_code", "password", "client_credentials", "refresh_token")


@api.post(
    "/api/v1/apps",
    tags=["apps"],
    response_model=CredentialApplication,
    responses={422: OAUTH_ERRORS[422]},
    openapi_extra=body_openapi(AppForm),
)
async def create_app(
    runtime: RuntimeDep, form: Annotated[AppForm, Depends(form_or_json(AppForm))]
) -> CredentialApplication:
    """Register a client application."""
    uris = (
        form.redirect_uris if isinstance(form.redirect_uris, str) else " ".join(form.redirect_uris)
    )
    app, secret = await actions.do_create_app(
        runtime, form.client_name, uris, form.scopes, form.website
    )
    return CredentialApplication(
        **render_app(app).model_dump(), client_id=app.client_id, client_secret=secret
    )


@api.get("/api/v1/apps/verify_credentials", tags=["apps"], response_model=Application)
async def verify_app(
    runtime: RuntimeDep, token: Annotated[AccessToken, Depends(require_token("read"))]
) -> Application:
    """The application a token belongs to."""
    app = await actions.load_app(runtime, token.app_id)
    if app is None:
        raise not_found()
    return render_app(app)


def _basic_client(request: Request) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "Malformed Basic authorization", 401) from None
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


@api.post(
    "/oauth/token",
    tags=["oauth"],
    response_model=Token,
    response_model_exclude_none=True,
    responses=OAUTH_ERRORS,
    openapi_extra=body_openapi(TokenForm),
)
async def token(
    request: Request,
    runtime: RuntimeDep,
    form: Annotated[TokenForm, Depends(form_or_json(TokenForm))],
) -> Token:
    """Obtain a token with any of the four grants."""
    basic_id, basic_secret = _basic_client(request)
    client_id, client_secret = form.client_id or basic_id, form.client_secret or basic_secret
    if form.grant_type not in GRANT_TYPES:
        raise OAuthError(
            "unsupported_grant_type", f"grant_type {form.grant_type!r} is not supported"
        )
    app = await actions.authenticate_client(runtime, client_id, client_secret)
    if form.grant_type == "password":
        if not form.username or not form.password:
            raise OAuthError("invalid_request", "username and password are required")
        issued = await actions.grant_password(
            runtime, app, form.username, form.password, form.scope
        )
    elif form.grant_type == "client_credentials":
        issued = await actions.grant_client_credentials(runtime, app, form.scope)
    elif form.grant_type == "authorization_code":
        if not form.code:
            raise OAuthError("invalid_request", "code is required")
        issued = await actions.grant_authorization_code(
            runtime, app, form.code, form.redirect_uri, form.code_verifier
        )
    else:
        if not form.refresh_token:
            raise OAuthError("invalid_request", "refresh_token is required")
        issued = await actions.grant_refresh_token(runtime, app, form.refresh_token, form.scope)
    return render_token(issued)


@api.post(
    "/oauth/revoke",
    tags=["oauth"],
    responses=OAUTH_ERRORS,
    openapi_extra=body_openapi(RevokeForm),
)
async def revoke(
    request: Request,
    runtime: RuntimeDep,
    form: Annotated[RevokeForm, Depends(form_or_json(RevokeForm))],
) -> dict[str, str]:
    """Revoke an access or refresh token."""
    basic_id, basic_secret = _basic_client(request)
    app = await actions.authenticate_client(
        runtime, form.client_id or basic_id, form.client_secret or basic_secret
    )
    await actions.do_revoke(runtime, app, form.token)
    return {}


@api.get("/.well-known/oauth-authorization-server", tags=["oauth"])
async def authorization_server_metadata(runtime: RuntimeDep) -> dict[str, Any]:
    """RFC 8414 metadata, which clients read to find endpoints and supported grants."""
    base = runtime.settings.base_url
    return {
        "issuer": base + "/",
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "app_registration_endpoint": f"{base}/api/v1/apps",
        "scopes_supported": sorted(ALL_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "service_documentation": "https://docs.joinmastodon.org/",
    }
