"""The AWS adapters: clients from one session, the token table (DynamoDB) and the
connections' secrets (Secrets Manager), behind small interfaces that tests can replace."""
