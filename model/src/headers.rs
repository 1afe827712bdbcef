//! The HTTP headers and gRPC metadata baton itself sets, in one place. Every `x-baton-*`
//! header a client sends is dropped where it enters (the router, or a data plane called
//! directly: `baton_service::http::client_headers`): only baton's own processes set them,
//! and no function ever sees one.

/// Prefix of every header baton sets; a client's own headers with it are dropped.
pub const PREFIX: &str = "x-baton-";

/// Router to data plane: the function's ownership generation the router's map holds; the
/// data plane refuses a call at another one (`421`).
pub const GENERATION: &str = "x-baton-generation";

/// Router to data plane: milliseconds the call already spent in baton before this attempt
/// (held while its owner failed over, an earlier attempt refused with `421`). The data
/// plane takes it off the function's timeout, so the whole call stays within it.
pub const SPENT_MS: &str = "x-baton-spent-ms";

/// Data plane's answer: `true` when the call waited for a sandbox created for it.
pub const COLD_START: &str = "x-baton-cold-start";

/// Data plane's answer: the cell that served the call.
pub const CELL: &str = "x-baton-cell";

/// A `421` answer: the cell the refusing data plane believes owns the function.
pub const OWNER: &str = "x-baton-owner";

/// A `421` answer: that owner's data plane for the function, when known.
pub const OWNER_DATA_PLANE: &str = "x-baton-owner-data-plane";

/// An invocation's ID, made by the router (or by a data plane called directly); every
/// answer carries it, the function receives it, and every log line about the call names
/// it. A client's own `X-Call-Id` is never taken for it: the function receives that as
/// [`CLIENT_CALL_ID`].
pub const CALL_ID: &str = "x-call-id";

/// Router to data plane: the call's ID ([`CALL_ID`]), so router, cell and function name
/// the call alike.
pub const ROUTER_CALL_ID: &str = "x-baton-call-id";

/// A client's `X-Call-Id`, as the function receives it.
pub const CLIENT_CALL_ID: &str = "x-client-call-id";

/// gRPC metadata naming a write to the shard manager: the same ID sent again (a retry
/// after a lost answer, to any replica) is answered as the first attempt was and applied
/// once. 1 to [`MAX_REQUEST_ID_LEN`] printable ASCII characters, no spaces. An ID names
/// one write: sent on another write, it is refused.
pub const REQUEST_ID: &str = "x-baton-request-id";

/// Longest request ID taken.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Router to data plane: the call is an asynchronous one's attempt. The data plane holds
/// such calls to the function's async share (`async.max_share`) and refuses the rest with
/// `429` and [`ASYNC_DEFERRED`], so a flood of async calls cannot starve sync callers.
pub const ASYNC: &str = "x-baton-async";

/// Data plane's answer to an async attempt over the function's async share: the attempt
/// did not run; the router puts the call back in its queue without counting it.
pub const ASYNC_DEFERRED: &str = "x-baton-async-deferred";

/// An async call's tries so far, on its callback (`X-Baton-Attempts`).
pub const ATTEMPTS: &str = "x-baton-attempts";

/// An async call's final state, on its callback (`X-Baton-Status`).
pub const STATUS: &str = "x-baton-status";
