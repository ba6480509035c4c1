"""Message transports behind one interface (``transports.base``).

``local`` (in-process queues), ``http`` (plain SCIM over HTTP), ``amqp`` (RabbitMQ) and
``servicebus`` (Azure Service Bus). ``registry`` picks one from a URL scheme with a lazy import.
Transports import ``protocol`` only: they carry bytes and know nothing of SCIM or LDAP.
"""
