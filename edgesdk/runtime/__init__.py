"""edgesdk.runtime: what runs on the board. Imports only the standard library and numpy; engines load lazily."""
