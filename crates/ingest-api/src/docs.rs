//! The OpenAPI document (`/openapi.json`) and Swagger UI (`/docs`), served from the binary.
//! The shapes it describes live in [`crate::schema`].

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::schema::{
    BatchBody, BatchEnvelope, DeviceDoc, InteractionInput, InteractionTypeDoc, ItemErrorDoc,
    SettingInput,
};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Interaction Logger",
        description = "Captures user interaction events from web, iOS and Android apps, normalizes \
            them (rating -1.0..1.0), stores them durably and forwards them to Ncanto."
    ),
    paths(
        crate::ingest::logs,
        crate::ingest::log_one,
        crate::ops::health,
        crate::ops::livez,
        crate::ops::readyz,
    ),
    components(schemas(InteractionInput, SettingInput, BatchBody, BatchEnvelope, ItemErrorDoc, InteractionTypeDoc, DeviceDoc)),
    modifiers(&Security),
    tags(
        (name = "ingest", description = "Sending events"),
        (name = "operations", description = "Health and probes (`/metrics` is on the admin port, INGEST_ADMIN_ADDR)"),
    )
)]
pub struct ApiDoc;
