"""Switchboard: a messaging fabric for cloud control planes over AMQP 1.0."""

__version__ = "0.1.0"
