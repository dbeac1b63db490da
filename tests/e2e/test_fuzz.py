"""Random well-typed requests to every sms.v1 RPC never answer INTERNAL or UNKNOWN,
and the server stays healthy afterwards.

The requests are built from the request descriptors, so a field added to a proto is
fuzzed without touching this file: strings (unicode, control characters, NUL, very
long), integers over the whole range of their type, enums with unknown numbers,
repeated and map fields of random (sometimes huge) sizes, timestamps out of range.
Realistic values (a valid mobile, real ids and page tokens of the account) are mixed
in by field name so that the fuzzer also gets past the first validation step.

How this runs with pytest-asyncio (session event loop): each test is an ordinary
async test. It runs Hypothesis's (synchronous) engine in a worker thread with
``asyncio.to_thread``; each example submits its gRPC call to the test's running loop
with ``asyncio.run_coroutine_threadsafe`` and waits for it. So the channel and the
gateway stay on the one loop they were made on, and after the examples the same test
goes on, on the loop, to check that the server is still healthy.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sms.v1 import (
    account_pb2,
    batch_pb2,
    common_pb2,
    console_pb2,
    inbound_pb2,
    message_pb2,
    suppression_pb2,
    template_pb2,
    verification_pb2,
    webhook_pb2,
)

from server.api.server import SERVICE_NAMES
from server.domain.otp_guard import GuardSettings
from server.domain.verification import OtpSettings
from server.store.accounts import PgAccountStore
from tests.conftest import basic_auth
from tests.e2e.conftest import Client, GatewayFactory, Running
from tests.e2e.errors import bad_fields

FD = descriptor.FieldDescriptor
CN = "+8613800138000"

SERVICES = [
    file.services_by_name[name]
    for file, name in (
        (message_pb2.DESCRIPTOR, "MessageService"),
        (verification_pb2.DESCRIPTOR, "VerificationService"),
        (batch_pb2.DESCRIPTOR, "BatchService"),
        (template_pb2.DESCRIPTOR, "TemplateService"),
        (webhook_pb2.DESCRIPTOR, "WebhookService"),
        (suppression_pb2.DESCRIPTOR, "SuppressionService"),
        (account_pb2.DESCRIPTOR, "AccountService"),
        (inbound_pb2.DESCRIPTOR, "InboundService"),
        (console_pb2.DESCRIPTOR, "ConsoleService"),
    )
]
METHODS = [method for service in SERVICES for method in service.methods]

# SMSGW_FUZZ_SCALE=10 runs ten times as many examples (for a deeper search by hand).
SCALE = float(os.environ.get("SMSGW_FUZZ_SCALE", "1"))
UNARY_EXAMPLES = int(100 * SCALE)
STREAM_EXAMPLES = int(15 * SCALE)
STREAM_DEADLINE = 0.3  # seconds a stream may run; DEADLINE_EXCEEDED is fine
STREAM_ITEMS = 3  # items read from a stream before it is cancelled
UNARY_DEADLINE = 20.0  # a unary call that takes longer is a failure

# ---------------------------------------------------------------------------------
# Strategies built from descriptors.

_INT_RANGES = {
    FD.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FD.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FD.CPPTYPE_UINT32: (0, 2**32 - 1),
    FD.CPPTYPE_UINT64: (0, 2**64 - 1),
}

# Any character protobuf can carry (valid UTF-8: no lone surrogates).
_ANY_CHAR = st.characters(codec="utf-8")
_NASTY_CHARS = st.sampled_from(
    [
        *("\x00", "\x01", "\x1b", "\x7f", "\n", "\r", "\t", "\u200b", "\u202e", "\ufeff"),
        *("#", "%", "'", '"', "\\", "/", ":", "💥", "【", "★", "\u0661", "\uff11", "é"),
        *("\uffff", "\U0010ffff"),
    ]
)
_NASTY_STRINGS = st.sampled_from(
    ["", " ", "\x00", "#code#", "https://x.io/#a#", "www.x.io", "%s%n", "{0}", "' OR 1=1 --"]
)
# Long strings: a short unit repeated up to some length past every limit.
_LONG = st.builds(
    lambda unit, size: (unit * (size // len(unit) + 1))[:size],
    st.text(st.one_of(_ANY_CHAR, _NASTY_CHARS), min_size=1, max_size=3),
    st.sampled_from([24, 33, 65, 129, 461, 1025, 5_000, 70_000, 1_000_000]),
)
SHORT_STRINGS = st.one_of(
    st.text(_ANY_CHAR, max_size=20),
    st.text(st.one_of(_ANY_CHAR, _NASTY_CHARS), max_size=80),
    _NASTY_STRINGS,
)
STRINGS = st.one_of(SHORT_STRINGS, _LONG)

_NOW = int(time.time())
TIMESTAMPS = st.builds(
    lambda seconds, nanos: timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
    st.one_of(
        st.integers(_NOW - 40 * 86_400, _NOW + 40 * 86_400),
        st.sampled_from(
            [0, -1, -62_135_596_800, -62_135_596_801, 253_402_300_799, 253_402_300_800]
        ),
        st.integers(*_INT_RANGES[FD.CPPTYPE_INT64]),
    ),
    st.one_of(
        st.just(0),
        st.integers(0, 999_999_999),
        st.sampled_from([-1, 1_000_000_000, -(2**31), 2**31 - 1]),
    ),
)


@st.composite
def either(draw: st.DrawFn, *strategies: st.SearchStrategy[Any]) -> Any:
    """One of ``strategies``, each as likely (``st.one_of`` flattens nested choices, so
    a strategy that is itself a choice of many would crowd out the others)."""
    return draw(strategies[draw(st.integers(0, len(strategies) - 1))])


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, 1, -1, 100, 101, low, high, low + 1, high - 1) if low <= v <= high]
    return st.one_of(
        st.sampled_from(edges),
        st.integers(-5, 200).filter(lambda v: low <= v <= high),
        st.integers(low, high),
    )


def scalar(
    field: descriptor.FieldDescriptor, hints: Mapping[str, Sequence[object]], small: bool = False
) -> Any:
    """The strategy for one value of a non-message field."""
    if field.cpp_type == FD.CPPTYPE_STRING:
        base: st.SearchStrategy[Any] = SHORT_STRINGS if small else STRINGS
        if field.type == FD.TYPE_BYTES:
            base = st.binary(max_size=100)
        kind: type = bytes if field.type == FD.TYPE_BYTES else str
    elif field.cpp_type in _INT_RANGES:
        base = integers(*_INT_RANGES[field.cpp_type])
        kind = int
    elif field.cpp_type == FD.CPPTYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        base = st.one_of(st.sampled_from(known), integers(-(2**31), 2**31 - 1))
        kind = int
    elif field.cpp_type == FD.CPPTYPE_BOOL:
        return st.booleans()
    else:  # float and double: none in sms.v1 requests today
        return st.floats(allow_nan=True, allow_infinity=True)
    realistic = [v for v in hints.get(field.name, ()) if type(v) is kind]
    if not realistic:
        return base
    if kind is str:
        # Also a realistic value with a nasty character slipped in ("Hel\x00lo").
        return either(st.sampled_from(realistic), spliced(st.sampled_from(realistic)), base)
    return either(st.sampled_from(realistic), base)


@st.composite
def spliced(draw: st.DrawFn, values: st.SearchStrategy[str]) -> str:
    """A value with a nasty character inserted; half the time NUL, which PostgreSQL
    text refuses (the most likely way for a string to reach the database and fail)."""
    value = draw(values)
    at = draw(st.integers(0, len(value)))
    return value[:at] + draw(st.one_of(st.just("\x00"), _NASTY_CHARS)) + value[at:]


MANY = (100, 101, 1_000, 100_001)  # sizes past the limits of repeated and map fields
MANY_ITEM_CHARS = 70  # items of a long list are cut to this (100,001 long strings is GBs)


@st.composite
def repeated(draw: st.DrawFn, item: st.SearchStrategy[Any], many: bool) -> list[Any]:
    """Usually a few items; with ``many``, sometimes a number past a limit."""
    size = (
        draw(st.one_of(st.integers(0, 4), st.sampled_from(MANY)))
        if many
        else draw(st.integers(0, 4))
    )
    if size <= 4:
        return [draw(item) for _ in range(size)]
    # Many items: a few drawn ones, then variations of them (drawing 100,000 is slow).
    drawn = [
        v[:MANY_ITEM_CHARS] if isinstance(v, str) else v
        for v in draw(st.lists(item, min_size=3, max_size=3))
    ]
    if all(isinstance(v, str) for v in drawn) and draw(st.booleans()):
        return [f"{drawn[i % 3]}{i}" for i in range(size)]
    return [drawn[i % 3] for i in range(size)]


@st.composite
def messages(
    draw: st.DrawFn,
    desc: descriptor.Descriptor,
    hints: Mapping[str, Sequence[object]],
    depth: int = 0,
    small: bool = False,
) -> Message:
    """A random ``desc`` message; ``small``: no long strings and no long lists in it."""
    if desc.full_name == "google.protobuf.Timestamp":
        stamp: Message = draw(TIMESTAMPS)
        return stamp
    msg = GetMessageClass(desc)()
    if depth > 3:
        return msg
    # One member of each oneof at most.
    chosen = {oneof.name: draw(st.sampled_from([None, *oneof.fields])) for oneof in desc.oneofs}
    for field in desc.fields:
        oneof = field.containing_oneof
        if oneof is not None and chosen[oneof.name] is not field:
            continue
        if oneof is None and not draw(st.integers(0, 4)):  # sometimes leave a field unset
            continue
        fill(draw, msg, field, hints, depth, small)
    return msg


def fill(
    draw: st.DrawFn,
    msg: Message,
    field: descriptor.FieldDescriptor,
    hints: Mapping[str, Sequence[object]],
    depth: int,
    small: bool,
) -> None:
    """Sets ``field`` of ``msg`` to a random value (after clearing it)."""
    msg.ClearField(field.name)
    # The field's container (repeated, map or message); unused for a scalar.
    target: Any = getattr(msg, field.name) if field.is_repeated or field.message_type else None
    many = not small and depth == 0  # long lists and maps only at the top level
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        keys = draw(repeated(scalar(key_field, hints, small), many=many))
        # A few values, repeated over the keys (a long map of long values is GBs).
        if value_field.message_type is not None:
            item = messages(value_field.message_type, hints, depth + 1, small or len(keys) > 4)
        else:
            item = scalar(value_field, hints, small)
        values = draw(st.lists(item, min_size=1, max_size=3)) if keys else []
        for index, key in enumerate(keys):
            value: Any = values[index % len(values)]
            if len(keys) > len(values) and isinstance(value, str):
                value = value[:MANY_ITEM_CHARS]
            if isinstance(value, Message):
                target[key].CopyFrom(value)
            else:
                target[key] = value
    elif field.message_type is not None:
        item = messages(field.message_type, hints, depth + 1, small)
        if field.is_repeated:
            for value in draw(st.lists(item, max_size=3)):
                target.add().CopyFrom(value)
        else:
            target.CopyFrom(draw(item))
    elif field.is_repeated:
        target.extend(draw(repeated(scalar(field, hints, small), many=many)))
    else:
        setattr(msg, field.name, draw(scalar(field, hints, small)))


def leaves(
    desc: descriptor.Descriptor, prefix: tuple[descriptor.FieldDescriptor, ...] = ()
) -> list[tuple[descriptor.FieldDescriptor, ...]]:
    """Paths to every field that ``fill`` sets as a whole (into nested messages)."""
    paths: list[tuple[descriptor.FieldDescriptor, ...]] = []
    for field in desc.fields:
        path = (*prefix, field)
        nested = field.message_type
        if (
            nested is None
            or field.is_repeated
            or nested.full_name == "google.protobuf.Timestamp"
            or len(path) > 2
        ):
            paths.append(path)
        else:
            paths.extend(leaves(nested, path))
    return paths


@st.composite
def mutants(
    draw: st.DrawFn, seeds: Sequence[Message], hints: Mapping[str, Sequence[object]]
) -> Message:
    """A valid request with one (or up to three) of its fields replaced by random values:
    past the validation of the others, deep into the use case and the database."""
    msg = draw(st.sampled_from(seeds))
    msg = type(msg).FromString(msg.SerializeToString())
    paths = leaves(msg.DESCRIPTOR)  # type: ignore[arg-type]  # upb's Descriptor is the same
    # Mostly one field: the others stay valid.
    count = min(draw(st.sampled_from([1, 1, 1, 2, 3])), len(paths))
    for path in draw(st.lists(st.sampled_from(paths), min_size=count, max_size=count, unique=True)):
        parent = msg
        for field in path[:-1]:
            parent = getattr(parent, field.name)
        fill(draw, parent, path[-1], hints, len(path) - 1, small=False)
    return msg


# ---------------------------------------------------------------------------------
# The account whose real resources are mixed into the requests.


@dataclass
class World:
    running: Running
    client: Client
    hints: dict[str, list[object]]  # realistic values by field name
    seeds: dict[str, list[Message]]  # valid requests by method name
    admin: tuple[tuple[str, str], ...] = ()  # an admin credential (AccountService)


@pytest.fixture(scope="module")
async def world(start_gateway: GatewayFactory) -> World:
    # No per-mobile wait, account limit or pumping guard: more sends get past them
    # to the database (RESOURCE_EXHAUSTED would be a fine answer too, just shallower).
    running = await start_gateway(
        otp=OtpSettings(
            mobile_interval_seconds=0.0,
            account_per_hour=0,
            guard=GuardSettings(prefix_limit=0, country_limit=0),
        )
    )
    client = await running.client()
    md = client.metadata
    t = template_pb2
    templates = [
        await client.templates.CreateTemplate(
            t.CreateTemplateRequest(template=t.Template(code=code, content=content, use_type=use)),
            metadata=md,
        )
        for code, content, use in (
            ("hello", "Hello #name#, order #order_no#.", common_pb2.USE_TYPE_NOTIFICATION),
            ("otp", "Your code is #code#.", common_pb2.USE_TYPE_VERIFICATION),
            ("plain", "No variables here.", common_pb2.USE_TYPE_NOTIFICATION),
        )
    ]
    sent = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=CN, use_type=common_pb2.USE_TYPE_NOTIFICATION, text="hi"
        ),
        metadata=md,
    )
    batch = await client.batches.CreateBatch(
        batch_pb2.CreateBatchRequest(
            use_type=common_pb2.USE_TYPE_NOTIFICATION,
            content="Batch for #name#",
            numbers=[CN, "+8613800138001", "+8613800138002"],
            template_data={
                n: batch_pb2.TemplateData(values={"name": "x"})
                for n in (CN, "+8613800138001", "+8613800138002")
            },
        ),
        metadata=md,
    )
    page = await client.batches.ListBatchMessages(
        batch_pb2.ListBatchMessagesRequest(task_id=batch.task_id, page_size=1), metadata=md
    )
    template_page = await client.templates.ListTemplates(
        t.ListTemplatesRequest(page_size=1), metadata=md
    )
    verification = await client.verifications.SendVerification(
        verification_pb2.SendVerificationRequest(mobile=CN, code="73915582"), metadata=md
    )
    template_ids: list[object] = [x.id for x in templates]
    tomorrow = timestamp_pb2.Timestamp(seconds=_NOW + 86_400)
    # AccountService is called with an admin credential of another account, and
    # changes a scratch account (not the one the other services are fuzzed with).
    accounts = PgAccountStore(running.gateway.pool)
    ops = await accounts.create_account("ops", verified=True)
    admin_credential, admin_secret = await accounts.create_credential(ops.id, admin=True)
    scratch = await accounts.create_account("scratch", verified=True)
    scratch_key = (await accounts.create_credential(scratch.id))[0].api_key
    m, v, b, wh = message_pb2, verification_pb2, batch_pb2, webhook_pb2
    sp, ac = suppression_pb2, account_pb2
    notification = common_pb2.USE_TYPE_NOTIFICATION
    seeds: dict[str, list[Message]] = {
        "SendMessage": [
            m.SendMessageRequest(mobile=CN, use_type=notification, text="Hello"),
            m.SendMessageRequest(
                mobile=CN,
                use_type=notification,
                template_id=templates[0].id,
                data={"name": "x", "order_no": "A-1"},
                request_id="seed-1",
                send_at=tomorrow,
            ),
        ],
        "GetMessageStatus": [m.GetMessageStatusRequest(ids=[sent.id])],
        "WatchMessageStatus": [m.WatchMessageStatusRequest(ids=[sent.id], after_event_id=1)],
        "SendVerification": [
            v.SendVerificationRequest(mobile=CN, code="73915582", scene="login"),
            v.SendVerificationRequest(
                mobile=CN, template_id=templates[1].id, code_length=8, expire_minutes=10
            ),
        ],
        "CheckVerification": [
            v.CheckVerificationRequest(verify_id=verification.verify_id, mobile=CN, code="73915582")
        ],
        "CreateBatch": [
            b.CreateBatchRequest(
                use_type=notification,
                content="Hi #name#",
                numbers=[CN, "+8613800138001"],
                template_data={CN: b.TemplateData(values={"name": "x"})},
                request_id="seed-2",
                send_at=tomorrow,
            ),
            b.CreateBatchRequest(use_type=notification, template_id=templates[2].id, numbers=[CN]),
        ],
        "GetBatch": [b.GetBatchRequest(task_id=batch.task_id)],
        "ListBatchMessages": [
            b.ListBatchMessagesRequest(
                task_id=batch.task_id, page_size=1, page_token=page.next_page_token
            )
        ],
        "WatchBatch": [b.WatchBatchRequest(task_id=batch.task_id)],
        "CancelBatch": [b.CancelBatchRequest(task_id=batch.task_id)],
        "CreateTemplate": [
            t.CreateTemplateRequest(
                template=t.Template(
                    code="seed", content="Dear #name#, see you", use_type=notification
                )
            )
        ],
        "GetTemplate": [t.GetTemplateRequest(id=templates[0].id)],
        "ListTemplates": [
            t.ListTemplatesRequest(page_size=1, page_token=template_page.next_page_token)
        ],
        "DeleteTemplate": [t.DeleteTemplateRequest(id=templates[2].id)],
        "CreateWebhook": [
            wh.CreateWebhookRequest(
                url="https://203.0.113.7/hook", event_types=[wh.EVENT_TYPE_MESSAGE_STATUS]
            )
        ],
        "GetWebhook": [wh.GetWebhookRequest(id=1)],
        "ListWebhooks": [wh.ListWebhooksRequest(page_size=1)],
        "DeleteWebhook": [wh.DeleteWebhookRequest(id=2)],
        "ListWebhookDeliveries": [wh.ListWebhookDeliveriesRequest(webhook_id=1, page_size=1)],
        "RedeliverWebhookEvents": [
            wh.RedeliverWebhookEventsRequest(
                webhook_id=1, start_time=timestamp_pb2.Timestamp(seconds=_NOW), end_time=tomorrow
            )
        ],
        "AddSuppressions": [
            sp.AddSuppressionsRequest(
                mobiles=["+86 138 0013 8009", "+447911123456"],
                reason=sp.SUPPRESSION_REASON_OPT_OUT,
                use_types=[common_pb2.USE_TYPE_MARKETING],
            )
        ],
        "RemoveSuppression": [sp.RemoveSuppressionRequest(mobile="+8613800138009")],
        "GetSuppression": [sp.GetSuppressionRequest(mobile="+86 138-0013-8009")],
        "ListSuppressions": [sp.ListSuppressionsRequest(page_size=1)],
        "ListInboundMessages": [inbound_pb2.ListInboundMessagesRequest(page_size=1)],
        "WatchInboundMessages": [inbound_pb2.WatchInboundMessagesRequest(after_event_id=1)],
        "ListBatches": [console_pb2.ListBatchesRequest(page_size=1)],
        "SearchMessages": [
            console_pb2.SearchMessagesRequest(query=sent.id),
            console_pb2.SearchMessagesRequest(query=CN, page_size=2),
        ],
        "GetMessageHistory": [console_pb2.GetMessageHistoryRequest(id=sent.id)],
        "CreateAccount": [
            ac.CreateAccountRequest(
                account=ac.Account(name="fuzz", verified=True, quiet_hours=["21:00-08:00"])
            )
        ],
        "GetAccount": [ac.GetAccountRequest(id=scratch.id)],
        "ListAccounts": [ac.ListAccountsRequest(page_size=1)],
        "UpdateAccount": [
            ac.UpdateAccountRequest(
                account=ac.Account(id=scratch.id, name="renamed", otp_max_attempts=4),
                update_mask=field_mask_pb2.FieldMask(paths=["name", "otp_max_attempts"]),
            )
        ],
        "CreateCredential": [
            ac.CreateCredentialRequest(account_id=scratch.id, allow_cidrs=["10.0.0.0/8"])
        ],
        "ListCredentials": [ac.ListCredentialsRequest(account_id=scratch.id)],
        "RevokeCredential": [ac.RevokeCredentialRequest(api_key=scratch_key)],
        "TopUpBalance": [ac.TopUpBalanceRequest(account_id=scratch.id, amount=100)],
    }
    return World(
        running,
        client,
        {
            "mobile": [CN, "+8613800138001", "+447911123456"],
            "numbers": [CN, "+8613800138001", "+14155552671", "+447911123456"],
            "ids": [sent.id, batch.task_id],
            "id": [sent.id, *template_ids],
            "template_id": template_ids,
            "task_id": [batch.task_id],
            "verify_id": [verification.verify_id],
            "page_token": [page.next_page_token, template_page.next_page_token],
            "code": ["73915582", "123456", "hello", "otp"],
            "url": ["https://203.0.113.7/hook", "https://127.0.0.1/", "http://example.com/"],
            "webhook_id": [1, 2],
            "text": ["Hello", "Hi #name#"],
            "content": ["Hi #name#", "Plain content"],
            "name": ["x"],
            "order_no": ["A-1"],
            "scene": ["login"],
            "request_id": ["req-1", "req-2"],
            "page_size": [1, 2],
            "code_length": [4, 6, 8],
            "expire_minutes": [1, 5],
            "after_event_id": [1, 2],
            "key": ["name", "order_no", "code", CN],  # map keys
            "value": ["x", "A-1"],  # map values
        },
        seeds,
        basic_auth(admin_credential.api_key, admin_secret),
    )


# ---------------------------------------------------------------------------------
# Calls.

OK_FOR_STREAMS = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


async def call(
    channel: grpc.aio.Channel,
    method: descriptor.MethodDescriptor,
    request: Message,
    metadata: tuple[tuple[str, str], ...],
) -> str:
    """Calls ``method``; fails on INTERNAL or UNKNOWN, and on INVALID_ARGUMENT without a
    google.rpc.BadRequest naming the field(s). Returns the status code's name."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    reply = GetMessageClass(method.output_type)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=reply.FromString,
            )(request, metadata=metadata, timeout=STREAM_DEADLINE)
            read = 0
            async for _ in stream:
                read += 1
                if read >= STREAM_ITEMS:
                    stream.cancel()
                    break
        else:
            await channel.unary_unary(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=reply.FromString,
            )(request, metadata=metadata, timeout=UNARY_DEADLINE)
    except grpc.aio.AioRpcError as err:
        code = err.code()
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
            f"{path} answered {code.name}: {err.details()!r}"
        )
        if code in OK_FOR_STREAMS:
            assert method.server_streaming, f"{path} answered {code.name}"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert bad_fields(err), f"{path}: INVALID_ARGUMENT without a BadRequest field"
        return code.name
    return "OK"


async def assert_healthy(running: Running) -> None:
    """Health says SERVING and a normal send (by a fresh account) still works."""
    health = health_pb2_grpc.HealthStub(running.channel)
    checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    client = await running.client(name="after-fuzz")
    sent = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=CN, use_type=common_pb2.USE_TYPE_NOTIFICATION, text="still working"
        ),
        metadata=client.metadata,
        timeout=5,
    )
    assert sent.status == common_pb2.MESSAGE_STATUS_PENDING


def run_examples(
    loop: asyncio.AbstractEventLoop,
    strategy: st.SearchStrategy[Message],
    examples: int,
    body: Callable[[Message], Coroutine[Any, Any, str]],
) -> None:
    """Runs Hypothesis (in this worker thread); each example's coroutine on ``loop``.
    The answers are Hypothesis events: see them with --hypothesis-show-statistics."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def example(request: Message) -> None:
        event(asyncio.run_coroutine_threadsafe(body(request), loop).result(timeout=60))

    example()


@pytest.mark.timeout(120 * SCALE)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name.removeprefix("sms.v1."))
async def test_random_requests_never_fail_internally(
    world: World, method: descriptor.MethodDescriptor
) -> None:
    running, client = world.running, world.client
    examples = STREAM_EXAMPLES if method.server_streaming else UNARY_EXAMPLES
    # A third random requests, two thirds valid ones with a field or few replaced.
    seeds = world.seeds[method.name]
    requests = either(
        mutants(seeds, world.hints),
        messages(method.input_type, world.hints),
        mutants(seeds, world.hints),
    )
    await asyncio.to_thread(
        run_examples,
        asyncio.get_running_loop(),
        requests,
        examples,
        lambda request: call(
            running.channel,
            method,
            request,
            world.admin if method.containing_service.name == "AccountService" else client.metadata,
        ),
    )
    await assert_healthy(running)


def test_every_service_the_gateway_serves_is_fuzzed() -> None:
    """A service added to the gateway must be added to SERVICES above."""
    assert {service.full_name for service in SERVICES} == set(SERVICE_NAMES)
