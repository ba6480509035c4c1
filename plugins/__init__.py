"""Directory backends behind one interface (``plugins.directory``).

``memory`` is the async LDAP mock (demos, load tests); ``ldap`` talks to Active Directory and
OpenLDAP through bonsai. ``registry`` picks one by name from config. Plugins import ``protocol``
only: they know nothing of transports or SCIM.
"""
