"""Alert policy, replacement tickets, their store, API, web page and ITSM connectors."""
