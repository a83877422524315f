# Driven by tests/it/python.rs: argv = [mode, api_url, api_key].
import sys, time

from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError, LagoRateLimitError
from lago_python_client.models import (
    BatchEvent, BillableMetric, Charge, Charges, Customer, Event, Plan, Subscription, WebhookEndpoint,
)

mode, url, key = sys.argv[1], sys.argv[2], sys.argv[3]


def expect_error(status, code, fn):
    try:
        fn()
    except LagoApiError as e:
        assert e.status_code == status, (e.status_code, e.response)
        assert e.response.get("code") == code, e.response
        return e
    raise AssertionError(f"expected {status} {code}")


if mode == "ratelimit":
    seen = []
    client = Client(api_key=key, api_url=url, on_rate_limit_info=lambda info: seen.append(info))
    start = time.time()
    for i in range(6):
        client.plans.find("starter_monthly")
    assert any(i.remaining == 0 for i in seen), seen
    assert time.time() - start >= 1.0, "the client waited for X-RateLimit-Reset"
    strict = Client(api_key=key, api_url=url, retry_on_rate_limit=False)
    try:
        for i in range(10):
            strict.plans.find("starter_monthly")
        raise AssertionError("no 429")
    except LagoRateLimitError as e:
        assert e.status_code == 429
        assert e.reset is not None and e.reset >= 1, e.reset
        assert e.limit == 3
    print("PY-OK")
    sys.exit(0)

client = Client(api_key=key, api_url=url)

# customers
c = client.customers.create(Customer(external_id="py-team", name="Py Team", email="py@example.com", currency="USD"))
assert c.external_id == "py-team" and c.lago_id
c2 = client.customers.create(Customer(external_id="py-team", email="ap@example.com"))
assert c2.lago_id == c.lago_id and c2.name == "Py Team" and c2.email == "ap@example.com"
assert client.customers.find("py-team").email == "ap@example.com"
listed = client.customers.find_all({"per_page": 10, "page": 1})
assert any(x.external_id == "py-team" for x in listed["customers"]) and listed["meta"]["total_count"] >= 1
expect_error(404, "customer_not_found", lambda: client.customers.find("nobody"))
bad = Client(api_key="wrong", api_url=url)
try:
    bad.customers.find("py-team")
    raise AssertionError("no 401")
except LagoApiError as e:
    assert e.status_code == 401

# billable metrics
m = client.billable_metrics.create(BillableMetric(name="Requests", code="requests", aggregation_type="sum_agg", field_name="count"))
assert m.code == "requests" and m.filters.__root__ == []
e = expect_error(422, "validation_errors", lambda: client.billable_metrics.create(
    BillableMetric(name="Requests", code="requests", aggregation_type="sum_agg", field_name="count")))
assert e.response["error_details"]["code"] == ["value_already_exist"]
expect_error(422, "validation_errors", lambda: client.billable_metrics.create(
    BillableMetric(name="Bad", code="bad", aggregation_type="sum_agg")))
m2 = client.billable_metrics.update(BillableMetric(name="HTTP requests"), "requests")
assert m2.name == "HTTP requests"
assert client.billable_metrics.find("storage_gb").field_name == "gb_used"
assert len(client.billable_metrics.find_all()["billable_metrics"]) == 2

# plans
charges = Charges(__root__=[
    Charge(billable_metric_id=m.lago_id, charge_model="package",
           properties={"amount": "2", "package_size": 1000, "free_units": 100}),
    Charge(billable_metric_id=client.billable_metrics.find("storage_gb").lago_id, charge_model="volume",
           properties={"volume_ranges": [
               {"from_value": 0, "to_value": 100, "flat_amount": "1", "per_unit_amount": "0.5"},
               {"from_value": 101, "to_value": None, "flat_amount": "0", "per_unit_amount": "0.25"}]}),
])
p = client.plans.create(Plan(name="API", code="api_monthly", interval="monthly", amount_cents=1999,
                             amount_currency="USD", pay_in_advance=False, trial_period=0.0, charges=charges))
assert p.code == "api_monthly" and p.amount_cents == 1999 and len(p.charges.__root__) == 2
assert client.plans.find("api_monthly").charges.__root__[0].charge_model == "package"
p2 = client.plans.update(Plan(description="for APIs"), "api_monthly")
assert p2.description == "for APIs" and p2.amount_cents == 1999
assert any(x.code == "starter_monthly" for x in client.plans.find_all()["plans"])
expect_error(404, "plan_not_found", lambda: client.plans.find("gold"))

# subscriptions
s = client.subscriptions.create(Subscription(external_customer_id="py-team", plan_code="api_monthly",
                                             external_id="py-site", name="py site"))
assert s.status == "active" and s.plan_code == "api_monthly"
s_again = client.subscriptions.create(Subscription(external_customer_id="py-team", plan_code="api_monthly",
                                                   external_id="py-site"))
assert s_again.lago_id == s.lago_id
auto = client.subscriptions.create(Subscription(external_customer_id="py-auto", plan_code="starter_monthly",
                                                external_id="py-auto-site"))
assert client.customers.find("py-auto").external_id == "py-auto"
subs = client.subscriptions.find_all({"external_customer_id": "py-team"})
assert [x.external_id for x in subs["subscriptions"]] == ["py-site"]
assert client.subscriptions.find("py-site").lago_id == s.lago_id
expect_error(404, "plan_not_found", lambda: client.subscriptions.create(
    Subscription(external_customer_id="py-team", plan_code="gold", external_id="py-x")))

# events: the client sends explicit nulls for timestamp/properties
ev = client.events.create(Event(transaction_id="py-1", external_subscription_id="py-site", code="requests",
                                properties={"count": 600}))
assert ev.transaction_id == "py-1"
client.events.create(Event(transaction_id="py-null", external_subscription_id="py-site", code="requests"))
e = expect_error(422, "validation_errors", lambda: client.events.create(
    Event(transaction_id="py-1", external_subscription_id="py-site", code="requests", properties={"count": 600})))
assert e.response["error_details"]["transaction_id"] == ["value_already_exist"]
client.events.batch_create(BatchEvent(events=[
    Event(transaction_id=f"py-b{i}", external_subscription_id="py-site", code="requests",
          timestamp=int(time.time()), properties={"count": 1000}) for i in range(50)
] + [
    Event(transaction_id="py-gb", external_subscription_id="py-site", code="storage_gb",
          timestamp=str(time.time()), properties={"gb_used": "150"}),
]))
e = expect_error(422, "validation_errors", lambda: client.events.batch_create(BatchEvent(events=[
    Event(transaction_id="py-new", external_subscription_id="py-site", code="requests", properties={"count": 1}),
    Event(transaction_id="py-b3", external_subscription_id="py-site", code="requests", properties={"count": 1}),
])))
assert e.response["error_details"] == {"1": {"transaction_id": ["value_already_exist"]}}, e.response
expect_error(404, "event_not_found", lambda: client.events.find("py-new"))
assert client.events.find("py-b3").external_subscription_id == "py-site"

# current usage: requests 600 + 50*1000 = 50600, minus 100 free -> 51 packages of 1000 at 2 = 102.00
# storage 150 GB -> volume tier 2: 150 * 0.25 = 37.50
u = client.customers.current_usage("py-team", "py-site")
by_code = {c.billable_metric.code: c for c in u.charges_usage}
assert by_code["requests"].units == "50600.0", by_code["requests"].units
assert by_code["requests"].events_count == 52
assert by_code["requests"].amount_cents == 10200, by_code["requests"].amount_cents
assert by_code["storage_gb"].amount_cents == 3750, by_code["storage_gb"].amount_cents
assert u.amount_cents == 13950 and u.total_amount_cents == 13950 and u.currency == "USD"
expect_error(405, "no_active_subscription", lambda: client.customers.current_usage("py-team", "missing"))

# invoices: terminating issues the closing invoice
t = client.subscriptions.destroy("py-site")
assert t.status == "terminated"
inv = client.invoices.find_all({"external_customer_id": "py-team"})
assert inv["meta"]["total_count"] == 1, inv["meta"]
i = inv["invoices"][0]
assert i.status == "finalized" and i.payment_status == "pending" and i.currency == "USD"
assert i.total_amount_cents >= 13950 and i.fees_amount_cents == i.total_amount_cents
assert client.invoices.find(i.lago_id).number == i.number
assert client.invoices.finalize(i.lago_id).status == "finalized"
assert client.invoices.void(i.lago_id).status == "voided"
expect_error(404, "invoice_not_found", lambda: client.invoices.find("00000000-0000-0000-0000-000000000000"))

# webhook endpoints and the key that checks JWT signatures
we = client.webhook_endpoints.create(WebhookEndpoint(webhook_url="http://127.0.0.1:9/hook", signature_algo="hmac"))
assert we.webhook_url == "http://127.0.0.1:9/hook" and we.lago_organization_id and we.signature_algo == "hmac"
assert any(x.lago_id == we.lago_id for x in client.webhook_endpoints.find_all()["webhook_endpoints"])
client.webhook_endpoints.destroy(we.lago_id)
pk = client.webhooks.public_key()
assert pk.startswith(b"-----BEGIN PUBLIC KEY-----"), pk[:40]

# deleting
client.customers.destroy("py-auto")
expect_error(404, "customer_not_found", lambda: client.customers.find("py-auto"))
client.plans.destroy("api_monthly")
client.billable_metrics.destroy("requests")
expect_error(404, "billable_metric_not_found", lambda: client.billable_metrics.find("requests"))
print("PY-OK")
