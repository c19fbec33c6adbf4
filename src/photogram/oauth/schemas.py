"""OAuth and app entities and request bodies, as Mastodon clients send and expect them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from photogram.oauth.actions import App, IssuedToken


class AppForm(BaseModel):
    client_name: str = Field(min_length=1, max_length=200)
    redirect_uris: str | list[str] = Field(
        description="One or more redirect URIs (space or newline separated, or an array); "
        "urn:ietf:wg:oauth:2.0:oob for out-of-band codes."
    )
    scopes: str | None = Field(default=None, description="Space-separated scopes; default read.")
    website: str | None = Field(default=None, max_length=2000)


class Application(BaseModel):
    id: str
    name: str
    website: str | None = None
    scopes: list[str]
    redirect_uri: str
    redirect_uris: list[str]
    vapid_key: str = ""


class CredentialApplication(Application):
    client_id: str
    client_secret: str
    client_secret_expires_at: int = 0


class TokenForm(BaseModel):
    grant_type: str = Field(
        description="password, client_credentials, authorization_code or refresh_token"
    )
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None
    username: str | None = Field(default=None, description="password grant: the e-mail address")
    password: str | None = None
    code: str | None = None
    redirect_uri: str | None = None
    code_verifier: str | None = None
    refresh_token: str | None = None


class RevokeForm(BaseModel):
    client_id: str | None = None
    client_secret: str | None = None
    token: str


class Token(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 (the token type, not a secret)
    scope: str
    created_at: int
    refresh_token: str | None = None
    expires_in: int | None = None


class OAuthErrorBody(BaseModel):
    error: str
    error_description: str | None = None


def render_app(app: App) -> Application:
    return Application(
        id=str(app.id),
        name=app.name,
        website=app.website,
        scopes=sorted(app.scopes),
        redirect_uri="\n".join(app.redirect_uris),
        redirect_uris=list(app.redirect_uris),
    )


def render_token(token: IssuedToken) -> Token:
    return Token(
        access_token=token.access_token,
        scope=" ".join(sorted(token.scopes)),
        created_at=int(token.created_at.timestamp()),
        refresh_token=token.refresh_token,
        expires_in=token.expires_in,
    )
