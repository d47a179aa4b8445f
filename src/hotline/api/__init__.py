"""The web API (docs/cti.md): FastAPI routes for sign-in, configuration, users, live state and call
records, and the CTI WebSocket gateway; served by `hotline serve` on the HTTP port.

- `create_app(app) -> FastAPI` (from the composition root), `build_api(ApiContext) -> FastAPI`.
- `HttpServer(api, host, port)`: `start()`, `stop()`, `port` (uvicorn inside the running event loop).
- `ApiContext`, and the service doors `AcdControl`, `BrowserPhones`.
- `ApiError` and the one error format; `mask_number`.
"""

from hotline.api.context import AcdControl, ApiContext, BrowserPhones
from hotline.api.errors import ApiError
from hotline.api.server import HttpServer, build_api, create_app
from hotline.tenancy.masking import mask_number

__all__ = [
    "AcdControl",
    "ApiContext",
    "ApiError",
    "BrowserPhones",
    "HttpServer",
    "build_api",
    "create_app",
    "mask_number",
]
