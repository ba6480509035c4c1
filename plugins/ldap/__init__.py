"""The LDAP directory plugin (bonsai): OpenLDAP, Active Directory and any LDAPv3 server.

Settings: ``LdapSettings`` (``directory: {plugin: ldap, urls: [...], bind_dn: ..., password: ...}``).
Guarantees: see ``directory.py`` (operations), ``pool.py`` (connections), ``delta_accesslog.py`` and
``delta_usn.py`` (changes with deletions), ``errors.py`` (result codes → directory errors).
"""

from plugins.ldap.directory import LdapDirectory
from plugins.ldap.settings import LdapSettings, RetrySettings

__all__ = ["LdapDirectory", "LdapSettings", "RetrySettings"]
