"""The provider catalogue (providers.toml): what each provider's token endpoint speaks, as
data, and the code for what data cannot say: building a token request and reading its
answer."""
