"""The web app for people: server-rendered pages over the same actions as the API.

``routes`` holds the pages; ``templating`` the Jinja environment they share with the OAuth
sign-in page (so both look alike), and ``session`` how a browser stays signed in. See
docs/web.md.
"""
