//! The web client at `/` and the JavaScript SDK at `/sdk/`: static files built into the binary,
//! so running the gateway needs neither Node.js nor a web server beside it.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::SharedState;

/// One file: where it is served, its type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/client/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/client/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/client/style.css"),
    },
    Asset {
        path: "/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/client/icon.svg"),
    },
    // At the root, so its scope is the whole client.
    Asset {
        path: "/sw.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/client/sw.js"),
    },
    Asset {
        path: "/sdk/dialbridge.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/sdk/dialbridge.js"),
    },
    Asset {
        path: "/sdk/dialbridge.d.ts",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../web/sdk/dialbridge.d.ts"),
    },
];

/// Everything the page loads comes from the gateway itself; media streams and blobs are local.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The routes of the static files; a call link's URL (`/calls/{id}`) opens the page too.
pub(super) fn routes() -> Router<SharedState> {
    let page = &ASSETS[0];
    ASSETS
        .iter()
        .fold(Router::new(), |router, asset| {
            router.route(
                asset.path,
                get(move |headers: HeaderMap| serve(asset, headers)),
            )
        })
        .route(
            "/calls/{id}",
            get(move |headers: HeaderMap| serve(page, headers)),
        )
}

/// A file with a validator: browsers revalidate (`no-cache`) and get 304 while it is unchanged,
/// so a new gateway version is picked up at once without re-sending unchanged files.
async fn serve(asset: &'static Asset, headers: HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", fnv1a(asset.body));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if asset.content_type.starts_with("text/html") {
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// 64-bit FNV-1a: a stable fingerprint of a file for its ETag (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
