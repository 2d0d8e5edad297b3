"""Built-in providers, mapped into the iacloud namespace as iacloud.providers.*."""
