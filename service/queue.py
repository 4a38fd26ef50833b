"""Redis as the work carrier: one client shared by enqueuing and throttling.

Jobs are serialized with msgpack via msgspec (never pickle): a payload from
Redis is data, not code.
"""

from __future__ import annotations

from typing import Any

import msgspec
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from service.settings import Settings

__all__ = ["ArqRedis", "create_redis", "decode_job", "encode_job"]

_encoder = msgspec.msgpack.Encoder(enc_hook=lambda obj: _encode_unknown(obj))
_decoder = msgspec.msgpack.Decoder()


def _encode_unknown(obj: Any) -> Any:
    # arq stores a failed job's exception as its result; keep only its type,
    # as its message may quote data.
    if isinstance(obj, BaseException):
        return type(obj).__name__
    raise NotImplementedError(f"cannot serialize {type(obj).__name__} into a job")


def encode_job(obj: Any) -> bytes:
    return _encoder.encode(obj)


def decode_job(data: bytes) -> Any:
    return _decoder.decode(data)


def create_redis(settings: Settings) -> ArqRedis:
    """A lazily connecting client: the API starts, and answers, without Redis."""
    pool = ConnectionPool.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )
    return ArqRedis(pool, job_serializer=encode_job, job_deserializer=decode_job)
