//! Data sources: `baton_cells` (every registered cell) and `baton_shard_map` (which cell
//! owns each function, at which generation).

use std::collections::HashMap;

use async_trait::async_trait;
use baton_proto::shard::ListFunctionsRequest;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty, ValueList, ValueNumber, ValueString};
use tf_provider::{DataSource, Diagnostics};

use crate::api::refused;
use crate::provider::{Shared, api};
use crate::schema::{computed, optional, report, schema};

/// One cell, as `baton_cells` lists it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell<'a> {
    #[serde(borrow = "'a")]
    id: ValueString<'a>,
    region: ValueString<'a>,
    state: ValueString<'a>,
    control: ValueString<'a>,
    data_planes: ValueList<ValueString<'a>>,
    weight: ValueNumber,
    functions: ValueNumber,
}

/// State of `baton_cells`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellsState<'a> {
    #[serde(borrow = "'a")]
    cells: ValueList<Value<Cell<'a>>>,
}

/// The `baton_cells` data source.
pub struct CellsData(pub Shared);

fn object(fields: &[(&str, AttributeType)]) -> AttributeType {
    AttributeType::Object(fields.iter().map(|(n, t)| (n.to_string(), t.clone())).collect::<HashMap<_, _>>())
}

#[async_trait]
impl DataSource for CellsData {
    type State<'a> = CellsState<'a>;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let (string, number) = (AttributeType::String, AttributeType::Number);
        let cell = object(&[
            ("id", string.clone()),
            ("region", string.clone()),
            ("state", string.clone()),
            ("control", string.clone()),
            ("data_planes", AttributeType::List(Box::new(string))),
            ("weight", number.clone()),
            ("functions", number),
        ]);
        Some(schema(
            "Every cell registered with the federation.",
            vec![(
                "cells",
                computed(
                    AttributeType::List(Box::new(cell)),
                    "The cells: id, region, state (active, draining, down), control and data-plane addresses, \
                     weight, and how many functions each owns.",
                ),
            )],
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        _config: CellsState<'a>,
        _meta: ValueEmpty,
    ) -> Option<CellsState<'a>> {
        let api = api(&self.0, diags)?;
        match crate::cell::cells(api).await {
            Ok(cells) => Some(CellsState {
                cells: Value::Value(
                    cells
                        .into_iter()
                        .map(|c| {
                            Value::Value(Cell {
                                id: Value::Value(c.id.into()),
                                region: Value::Value(c.region.into()),
                                state: Value::Value(c.state.into()),
                                control: Value::Value(c.control.into()),
                                data_planes: Value::Value(
                                    c.data_planes.into_iter().map(|d| Value::Value(d.into())).collect(),
                                ),
                                weight: Value::Value(c.weight.into()),
                                functions: Value::Value(c.functions as i64),
                            })
                        })
                        .collect(),
                ),
            }),
            Err(e) => {
                report(diags, "reading the cells", e);
                None
            }
        }
    }
}

/// One function's place, as `baton_shard_map` lists it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement<'a> {
    #[serde(borrow = "'a")]
    tenant: ValueString<'a>,
    name: ValueString<'a>,
    home_region: ValueString<'a>,
    cell: ValueString<'a>,
    generation: ValueNumber,
}

/// State of `baton_shard_map`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMapState<'a> {
    #[serde(borrow = "'a")]
    tenant: ValueString<'a>,
    cell: ValueString<'a>,
    epoch: ValueNumber,
    functions: ValueList<Value<Placement<'a>>>,
}

/// The `baton_shard_map` data source.
pub struct ShardMapData(pub Shared);

#[async_trait]
impl DataSource for ShardMapData {
    type State<'a> = ShardMapState<'a>;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let (string, number) = (AttributeType::String, AttributeType::Number);
        let placement = object(&[
            ("tenant", string.clone()),
            ("name", string.clone()),
            ("home_region", string.clone()),
            ("cell", string.clone()),
            ("generation", number.clone()),
        ]);
        Some(schema(
            "The shard map: which cell owns each function, at which generation.",
            vec![
                ("tenant", optional(string.clone(), "Only this tenant's functions.")),
                ("cell", optional(string, "Only the functions this cell owns.")),
                ("epoch", computed(number, "The federation state's epoch the map was read at.")),
                (
                    "functions",
                    computed(AttributeType::List(Box::new(placement)), "tenant, name, home_region, cell, generation."),
                ),
            ],
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: ShardMapState<'a>,
        _meta: ValueEmpty,
    ) -> Option<ShardMapState<'a>> {
        let api = api(&self.0, diags)?;
        let request = ListFunctionsRequest {
            tenant: config.tenant.as_ref_option().map(|t| t.to_string()).unwrap_or_default(),
            cell: config.cell.as_ref_option().map(|c| c.to_string()).unwrap_or_default(),
            min_epoch: 0,
        };
        let listed = match api.manager().await {
            Ok(mut client) => client.list_functions(request).await.map_err(|s| refused("reading the shard map", s)),
            Err(e) => Err(e),
        };
        match listed {
            Ok(listed) => {
                let listed = listed.into_inner();
                let functions = listed
                    .functions
                    .into_iter()
                    .map(|f| {
                        Value::Value(Placement {
                            tenant: Value::Value(f.tenant.into()),
                            name: Value::Value(f.name.into()),
                            home_region: Value::Value(f.home_region.into()),
                            cell: Value::Value(f.cell.into()),
                            generation: Value::Value(f.generation as i64),
                        })
                    })
                    .collect();
                Some(ShardMapState {
                    tenant: config.tenant,
                    cell: config.cell,
                    epoch: Value::Value(listed.epoch as i64),
                    functions: Value::Value(functions),
                })
            }
            Err(e) => {
                report(diags, "reading the shard map", e);
                None
            }
        }
    }
}
