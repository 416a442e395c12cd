"""wiredb 0.7.1's module path `wiredb.client`: the same names, from their modules here."""

from ._client import AsyncClient as AsyncClient
from ._client import AsyncClientMixin as AsyncClientMixin
from ._client import Client as Client
from ._client import ClientMixin as ClientMixin

__all__ = ["AsyncClient", "AsyncClientMixin", "Client", "ClientMixin"]
