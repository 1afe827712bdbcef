//! Every error the router answers itself, classified once: each kind has one HTTP status
//! and one code, and every one is answered with the same body,
//! `{"error": {"code": "...", "message": "..."}}`. A shard-manager refusal arrives as a
//! gRPC status and is classified by its code here too. `docs/router.md` has the table.

use std::time::Duration;

use baton_service::http::{Body, BodyError, error_response};
use http::{HeaderValue, Response, StatusCode};
use tonic::Code;

use crate::auth::AuthError;
use crate::idempotency::BadKey;

/// An error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path is none the router serves.
    #[error("{0}")]
    NoRoute(&'static str),
    /// No valid API key.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// The tenant has no function of that name.
    #[error("function {0:?} does not exist")]
    FunctionNotFound(String),
    /// The body is over a limit, in bytes.
    #[error("the {what} is over the limit of {max} bytes")]
    TooLarge {
        /// The request body or the spec.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The body could not be read.
    #[error("reading the body: {0}")]
    BadBody(String),
    /// The body did not all arrive within `router.body_read_timeout`.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// The spec (or a field of the request) is invalid; the message names the field.
    #[error("{0}")]
    InvalidSpec(String),
    /// A function's image does not resolve (the message names the field and says why).
    #[error("{0}")]
    Image(String),
    /// A malformed `Idempotency-Key`.
    #[error(transparent)]
    BadIdempotencyKey(#[from] BadKey),
    /// The method is not one the resource allows.
    #[error("this resource allows {0}")]
    MethodNotAllowed(&'static str),
    /// The shard manager refused or failed; classified by its gRPC code.
    #[error("{}", .0.message())]
    ShardManager(tonic::Status),
    /// The owning cell could not be reached.
    #[error("{0}")]
    CellUnreachable(String),
    /// The owner's address in the map is not a URL.
    #[error("the owner's address {0:?} is invalid")]
    BadOwner(String),
    /// No answer from the owning cell within `router.call_timeout`.
    #[error("no answer within {} s", .0.as_secs())]
    CallTimeout(Duration),
    /// A request's header or parameter is invalid; the message names it.
    #[error("{0}")]
    InvalidRequest(String),
    /// The tenant has no async call of that ID (or its retention passed).
    #[error("call {0:?} does not exist (or its retention passed)")]
    CallNotFound(String),
    /// The async queue could not store or read a call.
    #[error("the async queue is unavailable: {0}")]
    AsyncUnavailable(String),
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        ApiError::ShardManager(status)
    }
}

impl ApiError {
    /// A request body that could not be read, `what` being the request body or the spec.
    pub fn body(e: BodyError, what: &'static str) -> Self {
        match e {
            BodyError::TooLarge(max) => ApiError::TooLarge { what, max },
            BodyError::Timeout(within) => ApiError::BodyTimeout(within),
            BodyError::Broken(why) => ApiError::BadBody(why),
        }
    }

    /// Its HTTP status and code.
    pub fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, "no_route"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::FunctionNotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            ApiError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::InvalidSpec(_) => (StatusCode::BAD_REQUEST, "invalid_spec"),
            ApiError::Image(_) => (StatusCode::BAD_REQUEST, "invalid_image"),
            ApiError::BadIdempotencyKey(_) => (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::ShardManager(status) => match status.code() {
                Code::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_spec"),
                Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                Code::AlreadyExists | Code::FailedPrecondition => (StatusCode::CONFLICT, "conflict"),
                Code::ResourceExhausted => (StatusCode::CONFLICT, "limit_exceeded"),
                Code::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
                Code::Unavailable | Code::DeadlineExceeded => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            ApiError::CellUnreachable(_) => (StatusCode::BAD_GATEWAY, "cell_unreachable"),
            ApiError::BadOwner(_) => (StatusCode::BAD_GATEWAY, "bad_owner"),
            ApiError::CallTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "call_timeout"),
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::CallNotFound(_) => (StatusCode::NOT_FOUND, "call_not_found"),
            ApiError::AsyncUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "async_unavailable"),
        }
    }

    /// The answer.
    pub fn response(&self) -> Response<Body> {
        let (status, code) = self.classify();
        let mut response = error_response(status, code, &self.to_string());
        match self {
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::MethodNotAllowed(allow) => {
                response.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_manager_code_has_one_status() {
        let status = |code| ApiError::ShardManager(tonic::Status::new(code, "m")).classify().0.as_u16();
        assert_eq!(status(Code::InvalidArgument), 400);
        assert_eq!(status(Code::NotFound), 404);
        assert_eq!(status(Code::AlreadyExists), 409);
        assert_eq!(status(Code::FailedPrecondition), 409);
        assert_eq!(status(Code::ResourceExhausted), 409);
        assert_eq!(status(Code::PermissionDenied), 403);
        assert_eq!(status(Code::Unavailable), 503);
        assert_eq!(status(Code::Internal), 500);
    }

    #[test]
    fn refusals_carry_their_headers() {
        let response = ApiError::from(AuthError::Missing).response();
        assert_eq!(
            (response.status().as_u16(), response.headers()["www-authenticate"].to_str().unwrap()),
            (401, "Bearer")
        );
        let response = ApiError::MethodNotAllowed("GET, PUT, DELETE").response();
        assert_eq!(
            (response.status().as_u16(), response.headers()["allow"].to_str().unwrap()),
            (405, "GET, PUT, DELETE")
        );
    }
}
