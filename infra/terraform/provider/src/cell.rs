//! `baton_cell`: a cell the federation already has (cells join by registering
//! themselves), with its drain state as desired state: `state = "draining"` drains it (it
//! takes nothing new and its functions move away gracefully), `"active"` fills it again.
//! `status` is what the federation reports, `down` included. Destroying the resource
//! fills a drained cell again, so that nothing stays drained by a configuration that no
//! longer says so.

use async_trait::async_trait;
use baton_proto::shard::{CellInfo, ListCellsRequest, SetCellStateRequest};
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty, ValueList, ValueString};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::api::{Api, ApiError, refused};
use crate::provider::{Shared, api};
use crate::schema::{computed, defaulted, found, outcome, report, required, schema};

/// State of a `baton_cell`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellState<'a> {
    #[serde(borrow = "'a")]
    id: ValueString<'a>,
    state: ValueString<'a>,
    status: ValueString<'a>,
    region: ValueString<'a>,
    control: ValueString<'a>,
    data_planes: ValueList<ValueString<'a>>,
}

/// The `baton_cell` resource.
pub struct CellResource(pub Shared);

/// Every registered cell.
pub async fn cells(api: &Api) -> Result<Vec<CellInfo>, ApiError> {
    let listed = api.manager().await?.list_cells(ListCellsRequest {}).await;
    Ok(listed.map_err(|s| refused("listing cells", s))?.into_inner().cells)
}

async fn find(api: &Api, id: &str) -> Result<Option<CellInfo>, ApiError> {
    Ok(cells(api).await?.into_iter().find(|c| c.id == id))
}

/// The state of `cell`; a cell that is down keeps the desired state it had.
fn from_info(cell: CellInfo, desired: &ValueString<'_>) -> CellState<'static> {
    let state = match cell.state.as_str() {
        "active" | "draining" => Value::Value(cell.state.clone().into()),
        _ => desired.clone().extend(),
    };
    CellState {
        id: Value::Value(cell.id.into()),
        state,
        status: Value::Value(cell.state.into()),
        region: Value::Value(cell.region.into()),
        control: Value::Value(cell.control.into()),
        data_planes: Value::Value(cell.data_planes.into_iter().map(|d| Value::Value(d.into())).collect()),
    }
}

/// Sets cell `id` to `state` unless it is there already; reads it back.
async fn converge(api: &Api, id: &str, state: &str) -> Result<CellState<'static>, ApiError> {
    let Some(cell) = find(api, id).await? else {
        return Err(ApiError::NotFound(format!(
            "cell {id} is not registered with the federation: start it (its [federation] section names the shard \
             manager) and apply again"
        )));
    };
    if cell.state != state {
        let request = SetCellStateRequest { cell: id.to_string(), state: state.to_string() };
        api.manager().await?.set_cell_state(request).await.map_err(|s| refused(&format!("cell {id}"), s))?;
    }
    let desired = Value::Value(state.into());
    match find(api, id).await? {
        Some(cell) => Ok(from_info(cell, &desired)),
        None => Err(ApiError::NotFound(format!("cell {id} is gone"))),
    }
}

#[async_trait]
impl Resource for CellResource {
    type State<'a> = CellState<'a>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let string = AttributeType::String;
        Some(schema(
            "A registered cell, drained or filled. Import: `terraform import baton_cell.NAME CELL_ID`.",
            vec![
                ("id", required(string.clone(), "The cell's ID, as it registered.")),
                (
                    "state",
                    defaulted(
                        string.clone(),
                        "\"active\" (takes functions) or \"draining\" (takes nothing new; its functions move away). \
                         Default: as it is.",
                    ),
                ),
                ("status", computed(string.clone(), "What the federation reports: active, draining or down.")),
                ("region", computed(string.clone(), "Its region.")),
                ("control", computed(string.clone(), "Its control plane's address.")),
                ("data_planes", computed(AttributeType::List(Box::new(string)), "Its data planes' addresses.")),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: CellState<'a>) -> Option<()> {
        if let Some(state) = config.state.as_ref_option()
            && !matches!(state.as_ref(), "active" | "draining")
        {
            diags.error_short(format!("state {state:?}: \"active\" or \"draining\""), AttributePath::new("state"));
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: CellState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(CellState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        match find(api, state.id.as_str()).await {
            Ok(Some(cell)) => Some((from_info(cell, &state.state), private)),
            Ok(None) => None,
            Err(e) => {
                report(diags, &format!("reading cell {}", state.id.as_str()), e);
                Some((state, private))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: CellState<'a>,
        _config: CellState<'a>,
        _meta: ValueEmpty,
    ) -> Option<(CellState<'a>, ValueEmpty)> {
        let mut state = proposed;
        if state.state.is_null() {
            state.state = Value::Unknown;
        }
        state.status = Value::Unknown;
        state.region = Value::Unknown;
        state.control = Value::Unknown;
        state.data_planes = Value::Unknown;
        Some((state, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: CellState<'a>,
        proposed: CellState<'a>,
        _config: CellState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(CellState<'a>, ValueEmpty, Vec<AttributePath>)> {
        let mut state = proposed;
        let replace = if state.id != prior.id { vec![AttributePath::new("id")] } else { Vec::new() };
        if state.state != prior.state {
            state.status = Value::Unknown;
        }
        Some((state, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: CellState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: CellState<'a>,
        _config: CellState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(CellState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        let id = planned.id.as_str().to_string();
        let desired = match planned.state.as_ref_option() {
            Some(state) => state.to_string(),
            None => match find(api, &id).await {
                Ok(Some(cell)) if cell.state == "draining" => "draining".to_string(),
                Ok(_) => "active".to_string(),
                Err(e) => {
                    report(diags, &format!("cell {id}"), e);
                    return None;
                }
            },
        };
        outcome(diags, &format!("cell {id}"), converge(api, &id, &desired).await).map(|state| (state, private))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        _prior: CellState<'a>,
        planned: CellState<'a>,
        _config: CellState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(CellState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        let id = planned.id.as_str().to_string();
        outcome(diags, &format!("cell {id}"), converge(api, &id, planned.state.as_str()).await)
            .map(|state| (state, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: CellState<'a>,
        _private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        let api = api(&self.0, diags)?;
        let id = prior.id.as_str().to_string();
        match find(api, &id).await {
            Ok(Some(cell)) if cell.state == "draining" => match converge(api, &id, "active").await {
                Ok(_) => Some(()),
                Err(e) => {
                    report(diags, &format!("filling cell {id} again"), e);
                    None
                }
            },
            // Active, down (the federation failed it over) or gone: nothing to undo.
            Ok(_) => Some(()),
            Err(e) => {
                report(diags, &format!("cell {id}"), e);
                None
            }
        }
    }

    async fn import<'a>(&self, diags: &mut Diagnostics, id: String) -> Option<(CellState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        let cell = found(diags, "cell", &id, find(api, &id).await)?;
        let desired = Value::Value(if cell.state == "draining" { "draining" } else { "active" }.into());
        Some((from_info(cell, &desired), ValueEmpty::default()))
    }
}
