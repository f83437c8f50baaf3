#!/usr/bin/env python3
"""Seeds a fresh orderflow engine for scripts/fuzz-api and writes the
schemathesis configuration that points the fuzzer at the seeded data.

Random ids and skus only ever find 404s and 422s; to reach the handlers'
real work (checkout, the order commands, stock changes) the fuzzer draws
path ids, skus and payment tokens from dictionaries of things that exist,
part of the time, and random values the rest.

Usage: fuzz-api-seed.py BASE_URL ADMIN_EMAIL ADMIN_PASSWORD CONFIG_OUT HOOKS_FILE
Prints the admin's access token on stdout.
"""

import json
import sys
import time
import urllib.error
import urllib.request

# Loopback only: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# `tee-red-m` is the example sku of the OpenAPI document, so the examples
# phase finds it too.
SKUS = ["tee-red-m", "fuzz-mug", "fuzz-cap"]
# Enough stock that no run sells out (orders hold at most 10 000 a line).
STOCK = 1_000_000_000
CARTS = 6
ORDERS = 8


def call(base, method, path, body=None, token=None, expect=(200, 201)):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with OPENER.open(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    if status not in expect:
        sys.exit(f"fuzz-api-seed: {method} {path} answered {status}: {text}")
    return json.loads(text) if text else None


def toml_list(values):
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def main():
    base, email, password, config_out, hooks = sys.argv[1:6]
    admin = call(base, "POST", "/api/v1/auth/login", {"email": email, "password": password})
    token = admin["access_token"]

    for sku in SKUS:
        call(base, "POST", "/api/v1/products", {
            "sku": sku, "name": f"Fuzz {sku}", "price": 250, "currency": "USD",
            "initial_stock": STOCK,
        }, token)

    # Endpoints at a port nothing listens on: their deliveries fail, so the
    # fuzzer finds deliveries in every status to list and replay.
    webhooks = [
        call(base, "POST", "/api/v1/webhooks", {
            "url": f"http://127.0.0.1:9/fuzz-{i}", "events": events,
        }, token)["id"]
        for i, events in enumerate([["*"], ["order.created", "order.paid"]])
    ]

    carts = []
    for i in range(CARTS):
        cart = call(base, "POST", "/api/v1/carts", {}, token)
        call(base, "POST", f"/api/v1/carts/{cart['id']}/items",
             {"sku": SKUS[i % len(SKUS)], "quantity": 2}, token)
        carts.append(cart["id"])

    orders = []
    for i in range(ORDERS):
        order = call(base, "POST", "/api/v1/orders", {
            "items": [{"sku": SKUS[i % len(SKUS)], "quantity": 3}],
            "payment": {"token": "tok_ok"},
        }, token, expect=(201, 202))
        orders.append(order.get("id") or order["order_id"])
    # Some orders further along their life, for deliver and refunds.
    for order in orders[:2]:
        call(base, "POST", f"/api/v1/orders/{order}/ship", {"carrier": "fuzz"}, token,
             expect=(200, 409))

    deliveries = []
    for _ in range(100):
        for webhook in webhooks:
            page = call(base, "GET", f"/api/v1/webhooks/{webhook}/deliveries?limit=20", token=token)
            deliveries.extend(d["id"] for d in page["items"] if d["id"] not in deliveries)
        if len(deliveries) >= 4:
            break
        time.sleep(0.1)
    if not deliveries:
        sys.exit("fuzz-api-seed: no webhook deliveries were made for the seeded orders")

    with open(config_out, "w") as f:
        f.write(f"""# Written by scripts/fuzz-api-seed.py for one fuzz run; do not edit.

hooks = {json.dumps(hooks)}

[dictionaries.skus]
values = {toml_list(SKUS)}

[dictionaries.carts]
values = {toml_list(carts)}

[dictionaries.orders]
values = {toml_list(orders)}

[dictionaries.webhooks]
values = {toml_list(webhooks)}

[dictionaries.deliveries]
values = {toml_list(deliveries)}

[dictionaries.payment_tokens]
values = ["tok_ok", "tok_declined", "tok_capture_declined", "tok_error_once"]

[parameters]
"path.sku" = {{ dictionary = "skus", probability = 0.6 }}
"body.sku" = {{ dictionary = "skus", probability = 0.6 }}
"body.items[*].sku" = {{ dictionary = "skus", probability = 0.8 }}
"body.restock[*].sku" = {{ dictionary = "skus", probability = 0.8 }}
"body.payment.token" = {{ dictionary = "payment_tokens", probability = 0.7 }}

[[operations]]
include-path-regex = "^/api/v1/carts/\\\\{{id\\\\}}"
parameters = {{ "path.id" = {{ dictionary = "carts", probability = 0.7 }} }}

[[operations]]
include-path-regex = "^/api/v1/(orders|sagas)/\\\\{{id\\\\}}"
parameters = {{ "path.id" = {{ dictionary = "orders", probability = 0.7 }} }}

[[operations]]
include-path-regex = "^/api/v1/webhooks/\\\\{{id\\\\}}/deliveries"
parameters = {{ "path.id" = {{ dictionary = "webhooks", probability = 0.7 }} }}

[[operations]]
include-path-regex = "^/api/v1/webhooks/deliveries/"
parameters = {{ "path.delivery_id" = {{ dictionary = "deliveries", probability = 0.7 }} }}
""")
    print(token)


if __name__ == "__main__":
    main()
