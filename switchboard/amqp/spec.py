"""AMQP 1.0 composite types and restricted-type choices, generated from the spec XML.

Do not edit: run ``python tools/gen_spec.py > switchboard/amqp/spec.py``.
"""

from __future__ import annotations

from typing import Any

from .composite import Composite, Field
from .types import Symbol, UByte, UInt, UShort


class Role:
    """Choices of the restricted type ``role`` (boolean)."""

    SENDER = False
    RECEIVER = True


class SenderSettleMode:
    """Choices of the restricted type ``sender-settle-mode`` (ubyte)."""

    UNSETTLED = 0
    SETTLED = 1
    MIXED = 2


class ReceiverSettleMode:
    """Choices of the restricted type ``receiver-settle-mode`` (ubyte)."""

    FIRST = 0
    SECOND = 1


class AmqpError:
    """Choices of the restricted type ``amqp-error`` (symbol)."""

    INTERNAL_ERROR = Symbol('amqp:internal-error')
    NOT_FOUND = Symbol('amqp:not-found')
    UNAUTHORIZED_ACCESS = Symbol('amqp:unauthorized-access')
    DECODE_ERROR = Symbol('amqp:decode-error')
    RESOURCE_LIMIT_EXCEEDED = Symbol('amqp:resource-limit-exceeded')
    NOT_ALLOWED = Symbol('amqp:not-allowed')
    INVALID_FIELD = Symbol('amqp:invalid-field')
    NOT_IMPLEMENTED = Symbol('amqp:not-implemented')
    RESOURCE_LOCKED = Symbol('amqp:resource-locked')
    PRECONDITION_FAILED = Symbol('amqp:precondition-failed')
    RESOURCE_DELETED = Symbol('amqp:resource-deleted')
    ILLEGAL_STATE = Symbol('amqp:illegal-state')
    FRAME_SIZE_TOO_SMALL = Symbol('amqp:frame-size-too-small')


class ConnectionError:
    """Choices of the restricted type ``connection-error`` (symbol)."""

    CONNECTION_FORCED = Symbol('amqp:connection:forced')
    FRAMING_ERROR = Symbol('amqp:connection:framing-error')
    REDIRECT = Symbol('amqp:connection:redirect')


class SessionError:
    """Choices of the restricted type ``session-error`` (symbol)."""

    WINDOW_VIOLATION = Symbol('amqp:session:window-violation')
    ERRANT_LINK = Symbol('amqp:session:errant-link')
    HANDLE_IN_USE = Symbol('amqp:session:handle-in-use')
    UNATTACHED_HANDLE = Symbol('amqp:session:unattached-handle')


class LinkError:
    """Choices of the restricted type ``link-error`` (symbol)."""

    DETACH_FORCED = Symbol('amqp:link:detach-forced')
    TRANSFER_LIMIT_EXCEEDED = Symbol('amqp:link:transfer-limit-exceeded')
    MESSAGE_SIZE_EXCEEDED = Symbol('amqp:link:message-size-exceeded')
    REDIRECT = Symbol('amqp:link:redirect')
    STOLEN = Symbol('amqp:link:stolen')


class TerminusDurability:
    """Choices of the restricted type ``terminus-durability`` (uint)."""

    NONE = 0
    CONFIGURATION = 1
    UNSETTLED_STATE = 2


class TerminusExpiryPolicy:
    """Choices of the restricted type ``terminus-expiry-policy`` (symbol)."""

    LINK_DETACH = Symbol('link-detach')
    SESSION_END = Symbol('session-end')
    CONNECTION_CLOSE = Symbol('connection-close')
    NEVER = Symbol('never')


class StdDistMode:
    """Choices of the restricted type ``std-dist-mode`` (symbol)."""

    MOVE = Symbol('move')
    COPY = Symbol('copy')


class SaslCode:
    """Choices of the restricted type ``sasl-code`` (ubyte)."""

    OK = 0
    AUTH = 1
    SYS = 2
    SYS_PERM = 3
    SYS_TEMP = 4


class TxnCapability:
    """Choices of the restricted type ``txn-capability`` (symbol)."""

    LOCAL_TRANSACTIONS = Symbol('amqp:local-transactions')
    DISTRIBUTED_TRANSACTIONS = Symbol('amqp:distributed-transactions')
    PROMOTABLE_TRANSACTIONS = Symbol('amqp:promotable-transactions')
    MULTI_TXNS_PER_SSN = Symbol('amqp:multi-txns-per-ssn')
    MULTI_SSNS_PER_TXN = Symbol('amqp:multi-ssns-per-txn')


class TransactionError:
    """Choices of the restricted type ``transaction-error`` (symbol)."""

    UNKNOWN_ID = Symbol('amqp:transaction:unknown-id')
    TRANSACTION_ROLLBACK = Symbol('amqp:transaction:rollback')
    TRANSACTION_TIMEOUT = Symbol('amqp:transaction:timeout')


class Open(Composite):
    """``amqp:open:list``."""

    __slots__ = ('container_id', 'hostname', 'max_frame_size', 'channel_max', 'idle_time_out', 'outgoing_locales', 'incoming_locales', 'offered_capabilities', 'desired_capabilities', 'properties', )
    DESCRIPTOR = 0x10
    NAME = Symbol('amqp:open:list')
    TYPE_NAME = 'open'
    PROVIDES = ('frame',)
    FIELDS = (
        Field('container_id', 'string', mandatory=True),
        Field('hostname', 'string'),
        Field('max_frame_size', 'uint', default=UInt(4294967295)),
        Field('channel_max', 'ushort', default=UShort(65535)),
        Field('idle_time_out', 'uint'),
        Field('outgoing_locales', 'symbol', multiple=True),
        Field('incoming_locales', 'symbol', multiple=True),
        Field('offered_capabilities', 'symbol', multiple=True),
        Field('desired_capabilities', 'symbol', multiple=True),
        Field('properties', 'fields'),
    )

    def __init__(self, container_id: Any = None, hostname: Any = None, max_frame_size: Any = UInt(4294967295), channel_max: Any = UShort(65535), idle_time_out: Any = None, outgoing_locales: Any = None, incoming_locales: Any = None, offered_capabilities: Any = None, desired_capabilities: Any = None, properties: Any = None) -> None:
        self.container_id = container_id
        self.hostname = hostname
        self.max_frame_size = max_frame_size
        self.channel_max = channel_max
        self.idle_time_out = idle_time_out
        self.outgoing_locales = outgoing_locales
        self.incoming_locales = incoming_locales
        self.offered_capabilities = offered_capabilities
        self.desired_capabilities = desired_capabilities
        self.properties = properties


class Begin(Composite):
    """``amqp:begin:list``."""

    __slots__ = ('remote_channel', 'next_outgoing_id', 'incoming_window', 'outgoing_window', 'handle_max', 'offered_capabilities', 'desired_capabilities', 'properties', )
    DESCRIPTOR = 0x11
    NAME = Symbol('amqp:begin:list')
    TYPE_NAME = 'begin'
    PROVIDES = ('frame',)
    FIELDS = (
        Field('remote_channel', 'ushort'),
        Field('next_outgoing_id', 'uint', mandatory=True),
        Field('incoming_window', 'uint', mandatory=True),
        Field('outgoing_window', 'uint', mandatory=True),
        Field('handle_max', 'uint', default=UInt(4294967295)),
        Field('offered_capabilities', 'symbol', multiple=True),
        Field('desired_capabilities', 'symbol', multiple=True),
        Field('properties', 'fields'),
    )

    def __init__(self, remote_channel: Any = None, next_outgoing_id: Any = None, incoming_window: Any = None, outgoing_window: Any = None, handle_max: Any = UInt(4294967295), offered_capabilities: Any = None, desired_capabilities: Any = None, properties: Any = None) -> None:
        self.remote_channel = remote_channel
        self.next_outgoing_id = next_outgoing_id
        self.incoming_window = incoming_window
        self.outgoing_window = outgoing_window
        self.handle_max = handle_max
        self.offered_capabilities = offered_capabilities
        self.desired_capabilities = desired_capabilities
        self.properties = properties


class Attach(Composite):
    """``amqp:attach:list``."""

    __slots__ = ('name', 'handle', 'role', 'snd_settle_mode', 'rcv_settle_mode', 'source', 'target', 'unsettled', 'incomplete_unsettled', 'initial_delivery_count', 'max_message_size', 'offered_capabilities', 'desired_capabilities', 'properties', )
    DESCRIPTOR = 0x12
    NAME = Symbol('amqp:attach:list')
    TYPE_NAME = 'attach'
    PROVIDES = ('frame',)
    FIELDS = (
        Field('name', 'string', mandatory=True),
        Field('handle', 'uint', mandatory=True),
        Field('role', 'boolean', mandatory=True),
        Field('snd_settle_mode', 'ubyte', default=UByte(2)),
        Field('rcv_settle_mode', 'ubyte', default=UByte(0)),
        Field('source', '*', requires='source'),
        Field('target', '*', requires='target'),
        Field('unsettled', 'map'),
        Field('incomplete_unsettled', 'boolean', default=False),
        Field('initial_delivery_count', 'uint'),
        Field('max_message_size', 'ulong'),
        Field('offered_capabilities', 'symbol', multiple=True),
        Field('desired_capabilities', 'symbol', multiple=True),
        Field('properties', 'fields'),
    )

    def __init__(self, name: Any = None, handle: Any = None, role: Any = None, snd_settle_mode: Any = UByte(2), rcv_settle_mode: Any = UByte(0), source: Any = None, target: Any = None, unsettled: Any = None, incomplete_unsettled: Any = False, initial_delivery_count: Any = None, max_message_size: Any = None, offered_capabilities: Any = None, desired_capabilities: Any = None, properties: Any = None) -> None:
        self.name = name
        self.handle = handle
        self.role = role
        self.snd_settle_mode = snd_settle_mode
        self.rcv_settle_mode = rcv_settle_mode
        self.source = source
        self.target = target
        self.unsettled = unsettled
        self.incomplete_unsettled = incomplete_unsettled
        self.initial_delivery_count = initial_delivery_count
        self.max_message_size = max_message_size
        self.offered_capabilities = offered_capabilities
        self.desired_capabilities = desired_capabilities
        self.properties = properties


class Flow(Composite):
    """``amqp:flow:list``."""

    __slots__ = ('next_incoming_id', 'incoming_window', 'next_outgoing_id', 'outgoing_window', 'handle', 'delivery_count', 'link_credit', 'available', 'drain', 'echo', 'properties', )
    DESCRIPTOR = 0x13
    NAME = Symbol('amqp:flow:list')
    TYPE_NAME = 'flow'
    PROVIDES = ('frame',)
    FIELDS = (
        Field('next_incoming_id', 'uint'),
        Field('incoming_window', 'uint', mandatory=True),
        Field('next_outgoing_id', 'uint', mandatory=True),
        Field('outgoing_window', 'uint', mandatory=True),
        Field('handle', 'uint'),
        Field('delivery_count', 'uint'),
        Field('link_credit', 'uint'),
        Field('available', 'uint'),
        Field('drain', 'boolean', default=False),
        Field('echo', 'boolean', default=False),
        Field('properties', 'fields'),
    )

    def __init__(self, next_incoming_id: Any = None, incoming_window: Any = None, next_outgoing_id: Any = None, outgoing_window: Any = None, handle: Any = None, delivery_count: Any = None, link_credit: Any = None, available: Any = None, drain: Any = False, echo: Any = False, properties: Any = None) -> None:
        self.next_incoming_id = next_incoming_id
        self.incoming_window = incoming_window
        self.next_outgoing_id = next_outgoing_id
        self.outgoing_window = outgoing_window
        self.handle = handle
        self.delivery_count = delivery_count
        self.link_credit = link_credit
        self.available = available
        self.drain = drain
        self.echo = echo
        self.properties = properties


class Transfer(Composite):
    """``amqp:transfer:list``."""

    __slots__ = ('handle', 'delivery_id', 'delivery_tag', 'message_format', 'settled', 'more', 'rcv_settle_mode', 'state', 'resume', 'aborted', 'batchable', )
    DESCRIPTOR = 0x14
    NAME = Symbol('amqp:transfer:list')
    TYPE_NAME = 'transfer'
    PROVIDES = ('frame',)
    FIELDS = (
        Field('handle', 'uint', mandatory=True),
        Field('delivery_id', 'uint'),
        Field('delivery_tag', 'binary'),
        Field('message_format', 'uint'),
        Field('settled', 'boolean'),
        Field('more', 'boolean', default=False),
        Field('rcv_settle_mode', 'ubyte'),
        Field('state', '*', requires='delivery-state'),
        Field('resume', 'boolean', default=False),
        Field('aborted', 'boolean', default=False),
        Field('batchable', 'boolean', default=False),
    )

    def __init__(self, handle: Any = None, delivery_id: Any = None, delivery_tag: Any = None, message_format: Any = None, settled: Any = None, more: Any = False, rcv_settle_mode: Any = None, state: Any = None, resume: Any = False, aborted: Any = False, batchable: Any = False) -> None:
        self.handle = handle
        self.delivery_id = delivery_id
        self.delivery_tag = delivery_tag
        self.message_format = message_format
        self.settled = settled
        self.more = more
        self.rcv_settle_mode = rcv_settle_mode
        self.state = state
        self.resume = resume
        self.aborted = aborted
        self.batchable = batchable


class Disposition(Composite):
    """``amqp:disposition:list``."""

    __slots__ = ('role', 'first', 'last', 'settled', 'state', 'batchable', )
    DESCRIPTOR = 0x15
    NAME = Symbol('amqp:disposition:list')
    TYPE_NAME = 'disposition'
    PROVIDES = ('frame',)
    FIELDS = (
        Field('role', 'boolean', mandatory=True),
        Field('first', 'uint', mandatory=True),
        Field('last', 'uint'),
        Field('settled', 'boolean', default=False),
        Field('state', '*', requires='delivery-state'),
        Field('batchable', 'boolean', default=False),
    )

    def __init__(self, role: Any = None, first: Any = None, last: Any = None, settled: Any = False, state: Any = None, batchable: Any = False) -> None:
        self.role = role
        self.first = first
        self.last = last
        self.settled = settled
        self.state = state
        self.batchable = batchable


class Detach(Composite):
    """``amqp:detach:list``."""

    __slots__ = ('handle', 'closed', 'error', )
    DESCRIPTOR = 0x16
    NAME = Symbol('amqp:detach:list')
    TYPE_NAME = 'detach'
    PROVIDES = ('frame',)
    FIELDS = (
        Field('handle', 'uint', mandatory=True),
        Field('closed', 'boolean', default=False),
        Field('error', 'error'),
    )

    def __init__(self, handle: Any = None, closed: Any = False, error: Any = None) -> None:
        self.handle = handle
        self.closed = closed
        self.error = error


class End(Composite):
    """``amqp:end:list``."""

    __slots__ = ('error', )
    DESCRIPTOR = 0x17
    NAME = Symbol('amqp:end:list')
    TYPE_NAME = 'end'
    PROVIDES = ('frame',)
    FIELDS = (
        Field('error', 'error'),
    )

    def __init__(self, error: Any = None) -> None:
        self.error = error


class Close(Composite):
    """``amqp:close:list``."""

    __slots__ = ('error', )
    DESCRIPTOR = 0x18
    NAME = Symbol('amqp:close:list')
    TYPE_NAME = 'close'
    PROVIDES = ('frame',)
    FIELDS = (
        Field('error', 'error'),
    )

    def __init__(self, error: Any = None) -> None:
        self.error = error


class Error(Composite):
    """``amqp:error:list``."""

    __slots__ = ('condition', 'description', 'info', )
    DESCRIPTOR = 0x1d
    NAME = Symbol('amqp:error:list')
    TYPE_NAME = 'error'
    PROVIDES = ()
    FIELDS = (
        Field('condition', 'symbol', mandatory=True, requires='error-condition'),
        Field('description', 'string'),
        Field('info', 'fields'),
    )

    def __init__(self, condition: Any = None, description: Any = None, info: Any = None) -> None:
        self.condition = condition
        self.description = description
        self.info = info


class Header(Composite):
    """``amqp:header:list``."""

    __slots__ = ('durable', 'priority', 'ttl', 'first_acquirer', 'delivery_count', )
    DESCRIPTOR = 0x70
    NAME = Symbol('amqp:header:list')
    TYPE_NAME = 'header'
    PROVIDES = ('section',)
    FIELDS = (
        Field('durable', 'boolean'),
        Field('priority', 'ubyte'),
        Field('ttl', 'uint'),
        Field('first_acquirer', 'boolean'),
        Field('delivery_count', 'uint'),
    )

    def __init__(self, durable: Any = None, priority: Any = None, ttl: Any = None, first_acquirer: Any = None, delivery_count: Any = None) -> None:
        self.durable = durable
        self.priority = priority
        self.ttl = ttl
        self.first_acquirer = first_acquirer
        self.delivery_count = delivery_count


class Properties(Composite):
    """``amqp:properties:list``."""

    __slots__ = ('message_id', 'user_id', 'to', 'subject', 'reply_to', 'correlation_id', 'content_type', 'content_encoding', 'absolute_expiry_time', 'creation_time', 'group_id', 'group_sequence', 'reply_to_group_id', )
    DESCRIPTOR = 0x73
    NAME = Symbol('amqp:properties:list')
    TYPE_NAME = 'properties'
    PROVIDES = ('section',)
    FIELDS = (
        Field('message_id', '*', requires='message-id'),
        Field('user_id', 'binary'),
        Field('to', '*', requires='address'),
        Field('subject', 'string'),
        Field('reply_to', '*', requires='address'),
        Field('correlation_id', '*', requires='message-id'),
        Field('content_type', 'symbol'),
        Field('content_encoding', 'symbol'),
        Field('absolute_expiry_time', 'timestamp'),
        Field('creation_time', 'timestamp'),
        Field('group_id', 'string'),
        Field('group_sequence', 'uint'),
        Field('reply_to_group_id', 'string'),
    )

    def __init__(self, message_id: Any = None, user_id: Any = None, to: Any = None, subject: Any = None, reply_to: Any = None, correlation_id: Any = None, content_type: Any = None, content_encoding: Any = None, absolute_expiry_time: Any = None, creation_time: Any = None, group_id: Any = None, group_sequence: Any = None, reply_to_group_id: Any = None) -> None:
        self.message_id = message_id
        self.user_id = user_id
        self.to = to
        self.subject = subject
        self.reply_to = reply_to
        self.correlation_id = correlation_id
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.absolute_expiry_time = absolute_expiry_time
        self.creation_time = creation_time
        self.group_id = group_id
        self.group_sequence = group_sequence
        self.reply_to_group_id = reply_to_group_id


class Received(Composite):
    """``amqp:received:list``."""

    __slots__ = ('section_number', 'section_offset', )
    DESCRIPTOR = 0x23
    NAME = Symbol('amqp:received:list')
    TYPE_NAME = 'received'
    PROVIDES = ('delivery-state',)
    FIELDS = (
        Field('section_number', 'uint', mandatory=True),
        Field('section_offset', 'ulong', mandatory=True),
    )

    def __init__(self, section_number: Any = None, section_offset: Any = None) -> None:
        self.section_number = section_number
        self.section_offset = section_offset


class Accepted(Composite):
    """``amqp:accepted:list``."""

    __slots__ = ()
    DESCRIPTOR = 0x24
    NAME = Symbol('amqp:accepted:list')
    TYPE_NAME = 'accepted'
    PROVIDES = ('delivery-state', 'outcome')
    FIELDS = (
    )


class Rejected(Composite):
    """``amqp:rejected:list``."""

    __slots__ = ('error', )
    DESCRIPTOR = 0x25
    NAME = Symbol('amqp:rejected:list')
    TYPE_NAME = 'rejected'
    PROVIDES = ('delivery-state', 'outcome')
    FIELDS = (
        Field('error', 'error'),
    )

    def __init__(self, error: Any = None) -> None:
        self.error = error


class Released(Composite):
    """``amqp:released:list``."""

    __slots__ = ()
    DESCRIPTOR = 0x26
    NAME = Symbol('amqp:released:list')
    TYPE_NAME = 'released'
    PROVIDES = ('delivery-state', 'outcome')
    FIELDS = (
    )


class Modified(Composite):
    """``amqp:modified:list``."""

    __slots__ = ('delivery_failed', 'undeliverable_here', 'message_annotations', )
    DESCRIPTOR = 0x27
    NAME = Symbol('amqp:modified:list')
    TYPE_NAME = 'modified'
    PROVIDES = ('delivery-state', 'outcome')
    FIELDS = (
        Field('delivery_failed', 'boolean'),
        Field('undeliverable_here', 'boolean'),
        Field('message_annotations', 'fields'),
    )

    def __init__(self, delivery_failed: Any = None, undeliverable_here: Any = None, message_annotations: Any = None) -> None:
        self.delivery_failed = delivery_failed
        self.undeliverable_here = undeliverable_here
        self.message_annotations = message_annotations


class Source(Composite):
    """``amqp:source:list``."""

    __slots__ = ('address', 'durable', 'expiry_policy', 'timeout', 'dynamic', 'dynamic_node_properties', 'distribution_mode', 'filter', 'default_outcome', 'outcomes', 'capabilities', )
    DESCRIPTOR = 0x28
    NAME = Symbol('amqp:source:list')
    TYPE_NAME = 'source'
    PROVIDES = ('source',)
    FIELDS = (
        Field('address', '*', requires='address'),
        Field('durable', 'uint', default=UInt(0)),
        Field('expiry_policy', 'symbol', default=Symbol('session-end')),
        Field('timeout', 'uint', default=UInt(0)),
        Field('dynamic', 'boolean', default=False),
        Field('dynamic_node_properties', 'fields'),
        Field('distribution_mode', 'symbol', requires='distribution-mode'),
        Field('filter', 'map'),
        Field('default_outcome', '*', requires='outcome'),
        Field('outcomes', 'symbol', multiple=True),
        Field('capabilities', 'symbol', multiple=True),
    )

    def __init__(self, address: Any = None, durable: Any = UInt(0), expiry_policy: Any = Symbol('session-end'), timeout: Any = UInt(0), dynamic: Any = False, dynamic_node_properties: Any = None, distribution_mode: Any = None, filter: Any = None, default_outcome: Any = None, outcomes: Any = None, capabilities: Any = None) -> None:
        self.address = address
        self.durable = durable
        self.expiry_policy = expiry_policy
        self.timeout = timeout
        self.dynamic = dynamic
        self.dynamic_node_properties = dynamic_node_properties
        self.distribution_mode = distribution_mode
        self.filter = filter
        self.default_outcome = default_outcome
        self.outcomes = outcomes
        self.capabilities = capabilities


class Target(Composite):
    """``amqp:target:list``."""

    __slots__ = ('address', 'durable', 'expiry_policy', 'timeout', 'dynamic', 'dynamic_node_properties', 'capabilities', )
    DESCRIPTOR = 0x29
    NAME = Symbol('amqp:target:list')
    TYPE_NAME = 'target'
    PROVIDES = ('target',)
    FIELDS = (
        Field('address', '*', requires='address'),
        Field('durable', 'uint', default=UInt(0)),
        Field('expiry_policy', 'symbol', default=Symbol('session-end')),
        Field('timeout', 'uint', default=UInt(0)),
        Field('dynamic', 'boolean', default=False),
        Field('dynamic_node_properties', 'fields'),
        Field('capabilities', 'symbol', multiple=True),
    )

    def __init__(self, address: Any = None, durable: Any = UInt(0), expiry_policy: Any = Symbol('session-end'), timeout: Any = UInt(0), dynamic: Any = False, dynamic_node_properties: Any = None, capabilities: Any = None) -> None:
        self.address = address
        self.durable = durable
        self.expiry_policy = expiry_policy
        self.timeout = timeout
        self.dynamic = dynamic
        self.dynamic_node_properties = dynamic_node_properties
        self.capabilities = capabilities


class DeleteOnClose(Composite):
    """``amqp:delete-on-close:list``."""

    __slots__ = ()
    DESCRIPTOR = 0x2b
    NAME = Symbol('amqp:delete-on-close:list')
    TYPE_NAME = 'delete-on-close'
    PROVIDES = ('lifetime-policy',)
    FIELDS = (
    )


class DeleteOnNoLinks(Composite):
    """``amqp:delete-on-no-links:list``."""

    __slots__ = ()
    DESCRIPTOR = 0x2c
    NAME = Symbol('amqp:delete-on-no-links:list')
    TYPE_NAME = 'delete-on-no-links'
    PROVIDES = ('lifetime-policy',)
    FIELDS = (
    )


class DeleteOnNoMessages(Composite):
    """``amqp:delete-on-no-messages:list``."""

    __slots__ = ()
    DESCRIPTOR = 0x2d
    NAME = Symbol('amqp:delete-on-no-messages:list')
    TYPE_NAME = 'delete-on-no-messages'
    PROVIDES = ('lifetime-policy',)
    FIELDS = (
    )


class DeleteOnNoLinksOrMessages(Composite):
    """``amqp:delete-on-no-links-or-messages:list``."""

    __slots__ = ()
    DESCRIPTOR = 0x2e
    NAME = Symbol('amqp:delete-on-no-links-or-messages:list')
    TYPE_NAME = 'delete-on-no-links-or-messages'
    PROVIDES = ('lifetime-policy',)
    FIELDS = (
    )


class SaslMechanisms(Composite):
    """``amqp:sasl-mechanisms:list``."""

    __slots__ = ('sasl_server_mechanisms', )
    DESCRIPTOR = 0x40
    NAME = Symbol('amqp:sasl-mechanisms:list')
    TYPE_NAME = 'sasl-mechanisms'
    PROVIDES = ('sasl-frame',)
    FIELDS = (
        Field('sasl_server_mechanisms', 'symbol', mandatory=True, multiple=True),
    )

    def __init__(self, sasl_server_mechanisms: Any = None) -> None:
        self.sasl_server_mechanisms = sasl_server_mechanisms


class SaslInit(Composite):
    """``amqp:sasl-init:list``."""

    __slots__ = ('mechanism', 'initial_response', 'hostname', )
    DESCRIPTOR = 0x41
    NAME = Symbol('amqp:sasl-init:list')
    TYPE_NAME = 'sasl-init'
    PROVIDES = ('sasl-frame',)
    FIELDS = (
        Field('mechanism', 'symbol', mandatory=True),
        Field('initial_response', 'binary'),
        Field('hostname', 'string'),
    )

    def __init__(self, mechanism: Any = None, initial_response: Any = None, hostname: Any = None) -> None:
        self.mechanism = mechanism
        self.initial_response = initial_response
        self.hostname = hostname


class SaslChallenge(Composite):
    """``amqp:sasl-challenge:list``."""

    __slots__ = ('challenge', )
    DESCRIPTOR = 0x42
    NAME = Symbol('amqp:sasl-challenge:list')
    TYPE_NAME = 'sasl-challenge'
    PROVIDES = ('sasl-frame',)
    FIELDS = (
        Field('challenge', 'binary', mandatory=True),
    )

    def __init__(self, challenge: Any = None) -> None:
        self.challenge = challenge


class SaslResponse(Composite):
    """``amqp:sasl-response:list``."""

    __slots__ = ('response', )
    DESCRIPTOR = 0x43
    NAME = Symbol('amqp:sasl-response:list')
    TYPE_NAME = 'sasl-response'
    PROVIDES = ('sasl-frame',)
    FIELDS = (
        Field('response', 'binary', mandatory=True),
    )

    def __init__(self, response: Any = None) -> None:
        self.response = response


class SaslOutcome(Composite):
    """``amqp:sasl-outcome:list``."""

    __slots__ = ('code', 'additional_data', )
    DESCRIPTOR = 0x44
    NAME = Symbol('amqp:sasl-outcome:list')
    TYPE_NAME = 'sasl-outcome'
    PROVIDES = ('sasl-frame',)
    FIELDS = (
        Field('code', 'ubyte', mandatory=True),
        Field('additional_data', 'binary'),
    )

    def __init__(self, code: Any = None, additional_data: Any = None) -> None:
        self.code = code
        self.additional_data = additional_data


class Coordinator(Composite):
    """``amqp:coordinator:list``."""

    __slots__ = ('capabilities', )
    DESCRIPTOR = 0x30
    NAME = Symbol('amqp:coordinator:list')
    TYPE_NAME = 'coordinator'
    PROVIDES = ('target',)
    FIELDS = (
        Field('capabilities', 'symbol', multiple=True, requires='txn-capability'),
    )

    def __init__(self, capabilities: Any = None) -> None:
        self.capabilities = capabilities


class Declare(Composite):
    """``amqp:declare:list``."""

    __slots__ = ('global_id', )
    DESCRIPTOR = 0x31
    NAME = Symbol('amqp:declare:list')
    TYPE_NAME = 'declare'
    PROVIDES = ()
    FIELDS = (
        Field('global_id', '*', requires='global-tx-id'),
    )

    def __init__(self, global_id: Any = None) -> None:
        self.global_id = global_id


class Discharge(Composite):
    """``amqp:discharge:list``."""

    __slots__ = ('txn_id', 'fail', )
    DESCRIPTOR = 0x32
    NAME = Symbol('amqp:discharge:list')
    TYPE_NAME = 'discharge'
    PROVIDES = ()
    FIELDS = (
        Field('txn_id', '*', mandatory=True, requires='txn-id'),
        Field('fail', 'boolean'),
    )

    def __init__(self, txn_id: Any = None, fail: Any = None) -> None:
        self.txn_id = txn_id
        self.fail = fail


class Declared(Composite):
    """``amqp:declared:list``."""

    __slots__ = ('txn_id', )
    DESCRIPTOR = 0x33
    NAME = Symbol('amqp:declared:list')
    TYPE_NAME = 'declared'
    PROVIDES = ('delivery-state', 'outcome')
    FIELDS = (
        Field('txn_id', '*', mandatory=True, requires='txn-id'),
    )

    def __init__(self, txn_id: Any = None) -> None:
        self.txn_id = txn_id


class TransactionalState(Composite):
    """``amqp:transactional-state:list``."""

    __slots__ = ('txn_id', 'outcome', )
    DESCRIPTOR = 0x34
    NAME = Symbol('amqp:transactional-state:list')
    TYPE_NAME = 'transactional-state'
    PROVIDES = ('delivery-state',)
    FIELDS = (
        Field('txn_id', '*', mandatory=True, requires='txn-id'),
        Field('outcome', '*', requires='outcome'),
    )

    def __init__(self, txn_id: Any = None, outcome: Any = None) -> None:
        self.txn_id = txn_id
        self.outcome = outcome


class Descriptor:
    """Descriptor codes of every described type in the spec."""

    OPEN = 0x10
    BEGIN = 0x11
    ATTACH = 0x12
    FLOW = 0x13
    TRANSFER = 0x14
    DISPOSITION = 0x15
    DETACH = 0x16
    END = 0x17
    CLOSE = 0x18
    ERROR = 0x1d
    HEADER = 0x70
    DELIVERY_ANNOTATIONS = 0x71
    MESSAGE_ANNOTATIONS = 0x72
    PROPERTIES = 0x73
    APPLICATION_PROPERTIES = 0x74
    DATA = 0x75
    AMQP_SEQUENCE = 0x76
    AMQP_VALUE = 0x77
    FOOTER = 0x78
    RECEIVED = 0x23
    ACCEPTED = 0x24
    REJECTED = 0x25
    RELEASED = 0x26
    MODIFIED = 0x27
    SOURCE = 0x28
    TARGET = 0x29
    DELETE_ON_CLOSE = 0x2b
    DELETE_ON_NO_LINKS = 0x2c
    DELETE_ON_NO_MESSAGES = 0x2d
    DELETE_ON_NO_LINKS_OR_MESSAGES = 0x2e
    SASL_MECHANISMS = 0x40
    SASL_INIT = 0x41
    SASL_CHALLENGE = 0x42
    SASL_RESPONSE = 0x43
    SASL_OUTCOME = 0x44
    COORDINATOR = 0x30
    DECLARE = 0x31
    DISCHARGE = 0x32
    DECLARED = 0x33
    TRANSACTIONAL_STATE = 0x34


__all__ = [
    'Accepted',
    'AmqpError',
    'Attach',
    'Begin',
    'Close',
    'ConnectionError',
    'Coordinator',
    'Declare',
    'Declared',
    'DeleteOnClose',
    'DeleteOnNoLinks',
    'DeleteOnNoLinksOrMessages',
    'DeleteOnNoMessages',
    'Descriptor',
    'Detach',
    'Discharge',
    'Disposition',
    'End',
    'Error',
    'Flow',
    'Header',
    'LinkError',
    'Modified',
    'Open',
    'Properties',
    'Received',
    'ReceiverSettleMode',
    'Rejected',
    'Released',
    'Role',
    'SaslChallenge',
    'SaslCode',
    'SaslInit',
    'SaslMechanisms',
    'SaslOutcome',
    'SaslResponse',
    'SenderSettleMode',
    'SessionError',
    'Source',
    'StdDistMode',
    'Target',
    'TerminusDurability',
    'TerminusExpiryPolicy',
    'TransactionError',
    'TransactionalState',
    'Transfer',
    'TxnCapability',
]
