"""The API's ASGI middleware, one per module, in the order a request meets them:
``request_limits`` (header count, URL length), ``head`` (``HEAD`` as ``GET``),
``security_headers``, ``json_errors`` (every error as JSON), CORS (Starlette's, with
``cors.cors_options``), ``rate_limit``, ``api_keys`` and ``body_limit`` (the upload size),
all before a request's body is read; ``http_metrics`` counts every answer, refusals too.

Each reads headers with Starlette's ``Headers`` and refuses with a ``Response`` from
``errors.error_response``; ``api.create_app`` composes them.
"""
