"""tokenvend: token vending for third-party APIs on AWS (command line, client, local stack)."""
