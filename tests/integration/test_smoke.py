from support import PROVIDERS, Stack


def test_every_provider_vends_a_token_through_the_handlers(stack: Stack) -> None:
    for provider in PROVIDERS:
        stack.connect(provider)
    stack.authorize()
    for provider in PROVIDERS:
        status, body, headers = stack.vend("GET", provider)
        assert status == 200, body
        assert body["access_token"]
        assert headers["Cache-Control"] == "no-store"
