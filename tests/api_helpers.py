"""What the API tests share about the app's routes."""

# Under these prefixes every route needs a decided role (test_route_roles.py) and checks
# its path ids before use (test_path_ids.py).
DECIDED_PREFIXES = ("/v1/", "/dashboard")
