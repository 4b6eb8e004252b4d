"""The VICIdial side: response parsers (pure), the stage sanitiser and the HTTP client."""
