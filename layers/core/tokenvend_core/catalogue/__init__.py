"""The provider catalogue: providers as data (providers.toml, checked against
providers.schema.json), and what data cannot say.

- `spec`: a catalogue entry (`ProviderSpec`), reading and checking the catalogue, and
  checking a connection's secret against its entry;
- `urls`: token URLs, filled in from a secret and judged before any credential goes there;
- `request`: the token request an entry and a secret make (`TokenRequest`), its client
  authentication and every form in which it carries a secret;
- `answer`: reading the endpoint's answer into a token or a classified `Failure`, and
  `scrub`, which keeps secrets out of whatever the provider's words become.

Nothing here touches the network: `refresh/endpoint.py` sends what `request` builds.
"""
