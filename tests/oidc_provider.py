"""A small but real OpenID Connect provider for the tests, run as its own process on loopback:
discovery document, JWKS, an authorize page where a test user signs in with one click, and a
token endpoint that checks the code (once), the client's secret, the redirect URI and PKCE
(S256), and answers with an RS256-signed ID token (joserfc). facesearch's server talks to it
over real HTTP, as it would to an agency's provider.

It misbehaves on request, to show that facesearch refuses what it must:
POST /misbehave with a form field `mode` makes the next ID tokens carry a wrong audience
("audience"), a wrong nonce ("nonce"), a signature by a key not in the JWKS ("signature"), or
behave again ("").

    python -m tests.oidc_provider --port 8123 --client-id facesearch --client-secret s3cret \\
        --users '{"oscar": {"sub": "agency-0001", "groups": ["sergeants"]}}'
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CODE_SECONDS = 60
TOKEN_SECONDS = 300


class Provider:
    def __init__(self, issuer: str, client_id: str, client_secret: str, users: dict[str, dict]) -> None:
        self.issuer, self.client_id, self.client_secret, self.users = issuer, client_id, client_secret, users
        self.keys = KeySet([RSAKey.generate_key(2048, parameters={"kid": "test-1", "use": "sig",
                                                                   "alg": "RS256"}, private=True)])
        self.stranger = KeySet([RSAKey.generate_key(2048, parameters={"kid": "test-1"}, private=True)])
        self.codes: dict[str, dict] = {}
        self.mode = ""
        self.lock = threading.Lock()

    def discovery(self) -> dict:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"]}

    def id_token(self, grant: dict) -> str:
        now = int(time.time())
        user = self.users[grant["user"]]
        claims = {"iss": self.issuer, "sub": user["sub"], "aud": self.client_id, "iat": now,
                  "exp": now + TOKEN_SECONDS, "nonce": grant["nonce"],
                  "preferred_username": user.get("preferred_username", grant["user"]),
                  "groups": user.get("groups", [])}
        if self.mode == "audience":
            claims["aud"] = "some-other-client"
        if self.mode == "nonce":
            claims["nonce"] = secrets.token_urlsafe(16)
        keys = self.stranger if self.mode == "signature" else self.keys
        return jwt.encode({"alg": "RS256", "kid": "test-1"}, claims, keys)


def pkce_matches(verifier: str, challenge: str) -> bool:
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(digest, challenge)


def handler_for(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:  # quiet: the test's output is its own
            pass

        def answer(self, status: int, body: bytes, kind: str = "application/json",
                   headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def json(self, status: int, data: dict) -> None:
            self.answer(status, json.dumps(data).encode())

        def form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length", 0))
            return {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            if url.path == "/.well-known/openid-configuration":
                return self.json(200, provider.discovery())
            if url.path == "/jwks":
                return self.json(200, provider.keys.as_dict(private=False))
            if url.path == "/authorize":
                return self.authorize_page({k: v[0] for k, v in parse_qs(url.query).items()})
            return self.json(404, {"error": "not_found"})

        def authorize_page(self, query: dict[str, str]) -> None:
            if (query.get("client_id") != provider.client_id or query.get("response_type") != "code"
                    or query.get("code_challenge_method") != "S256" or not query.get("code_challenge")
                    or "openid" not in query.get("scope", "").split() or not query.get("redirect_uri")):
                return self.answer(400, b"bad authorization request", "text/plain")
            hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                             for k, v in query.items())
            buttons = "".join(f'<button name="user" value="{html.escape(u)}">Sign in as {html.escape(u)}</button>'
                              for u in provider.users)
            page = (f"<!doctype html><html lang=en><title>Test agency sign-in</title>"
                    f"<h1>Test agency</h1><form method=post action=/authorize>{hidden}{buttons}</form></html>")
            self.answer(200, page.encode(), "text/html; charset=utf-8")

        def do_POST(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            form = self.form()
            if url.path == "/authorize":
                if form.get("user") not in provider.users:
                    return self.answer(400, b"no such user", "text/plain")
                code = secrets.token_urlsafe(24)
                with provider.lock:
                    provider.codes[code] = {"user": form["user"], "nonce": form.get("nonce", ""),
                                            "redirect_uri": form["redirect_uri"],
                                            "challenge": form["code_challenge"],
                                            "expires": time.time() + CODE_SECONDS}
                back = f"{form['redirect_uri']}?{urlencode({'code': code, 'state': form.get('state', '')})}"
                return self.answer(302, b"", "text/plain", {"Location": back})
            if url.path == "/token":
                return self.token(form)
            if url.path == "/misbehave":
                provider.mode = form.get("mode", "")
                return self.json(200, {"mode": provider.mode})
            return self.json(404, {"error": "not_found"})

        def token(self, form: dict[str, str]) -> None:
            scheme, _, encoded = self.headers.get("Authorization", "").partition(" ")
            client_id, _, secret = (base64.b64decode(encoded).decode().partition(":")
                                    if scheme.lower() == "basic" else ("", "", ""))
            if client_id != provider.client_id or not hmac.compare_digest(secret, provider.client_secret):
                return self.json(401, {"error": "invalid_client"})
            with provider.lock:
                grant = provider.codes.pop(form.get("code", ""), None)  # a code is good once
            if (form.get("grant_type") != "authorization_code" or grant is None
                    or grant["expires"] < time.time() or grant["redirect_uri"] != form.get("redirect_uri")
                    or not pkce_matches(form.get("code_verifier", ""), grant["challenge"])):
                return self.json(400, {"error": "invalid_grant"})
            self.json(200, {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                            "expires_in": TOKEN_SECONDS, "id_token": provider.id_token(grant)})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--users", required=True, help="JSON: name -> {sub, groups, preferred_username}")
    args = parser.parse_args()
    provider = Provider(f"http://127.0.0.1:{args.port}", args.client_id, args.client_secret,
                        json.loads(args.users))
    ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(provider)).serve_forever()


if __name__ == "__main__":
    main()
