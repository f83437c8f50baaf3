"""schemathesis hooks for scripts/fuzz-api.

Stoq events are authenticated by an HMAC of the raw body, which a fuzzer
cannot guess: this hook signs them as Stoq would, under the secret the fuzz
run gives the engine, so the fuzzer reaches the handler. One event in four
(chosen by its body, so runs stay deterministic) keeps the generated
signature, to keep the 401 path tested.
"""

import hashlib
import hmac
import json
import os

import schemathesis
from schemathesis.core import NotSet

STOQ_PATH = "/api/v1/integrations/stoq/events"
SECRET = os.environ.get("FUZZ_API_STOQ_SECRET", "").encode()


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != STOQ_PATH or not SECRET or isinstance(case.body, NotSet):
        return
    if isinstance(case.body, bytes):
        raw = case.body
    else:
        try:
            # What the requests transport sends for a JSON body.
            raw = json.dumps(case.body, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            return
    if hashlib.sha256(raw).digest()[0] % 4 == 0:
        return
    signature = "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()
    case.headers = {**(case.headers or {}), "X-Stoq-Signature": signature}
