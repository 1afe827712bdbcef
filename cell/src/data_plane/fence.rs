//! Generation fencing. In a federation a data plane follows the shard map and serves a
//! tenant's function (`tenant.name` here, `tenant/name` in the map) only while the map
//! does not give it to another cell. A call for a function that moved away is refused
//! with `421 Misdirected Request` naming the owner and its generation, so a router with
//! a stale map retries there, and a cell that was partitioned away and comes back cannot
//! serve what moved: once its map catches up, it refuses.
//!
//! A router sends the generation it routed by (`X-Baton-Generation`). A generation newer
//! than the one this cell's map holds means the router has seen a later assignment than
//! we have: the cell serves (it would not be sent the call otherwise), waiting briefly for
//! the function to arrive. Data planes trust that header: only routers should reach
//! them (keep data planes on the cells' private network).

use baton_model::{FunctionId, Generation};
use baton_shardmap::{CellId, MapView};

/// What the fence says about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it: this cell owns the function, or the map has no word on it.
    Serve,
    /// Serve it, and this cell owns it by the map (worth waiting for its routing).
    Owned,
    /// Another cell owns it.
    Elsewhere {
        /// The owner.
        cell: String,
        /// The owner's generation.
        generation: Generation,
        /// The owner's data plane for the function, when known.
        data_plane: Option<String>,
    },
}

/// A data plane's fence: its cell and the map it follows.
#[derive(Clone)]
pub struct Fence {
    view: MapView,
    me: CellId,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence").field("cell", &self.me).field("epoch", &self.view.epoch()).finish()
    }
}

impl Fence {
    /// The fence of cell `me` over `view`.
    pub fn new(view: MapView, me: CellId) -> Self {
        Self { view, me }
    }

    /// This cell's ID.
    pub fn cell(&self) -> &str {
        &self.me.0
    }

    /// Checks a call for local function `name` routed at `generation`.
    pub fn check(&self, name: &str, generation: Option<Generation>) -> Verdict {
        let Some(id) = FunctionId::key_of_cell_name(name) else {
            // Not a tenant's function: registered on this cell directly.
            return Verdict::Serve;
        };
        let map = self.view.read();
        let Some(owner) = map.assigned_owner(&id) else {
            return Verdict::Serve;
        };
        let known = owner.generation.unwrap_or_default();
        if owner.cell.id == self.me {
            return Verdict::Owned;
        }
        if generation.is_some_and(|g| g > known) {
            // The router has seen it assigned here: ours, and maybe still on its way.
            return Verdict::Owned;
        }
        Verdict::Elsewhere {
            cell: owner.cell.id.0.clone(),
            generation: known,
            data_plane: owner.data_plane.map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use baton_shardmap::{Assignment, Cell, ShardMap};

    use super::*;

    fn cell(id: &str) -> Cell {
        Cell {
            control: format!("http://{id}:7100"),
            data_planes: vec![format!("http://{id}:8080")],
            ..Cell::active(id, "local")
        }
    }

    fn fence(owner: &str, generation: u64) -> Fence {
        let assignment = Assignment { cell: CellId(owner.into()), generation: Generation(generation) };
        let map = ShardMap::from_snapshot(
            baton_model::Epoch(9),
            [cell("a"), cell("b")],
            [("acme/echo".to_string(), assignment)],
        );
        Fence::new(MapView::fixed(map), CellId("a".into()))
    }

    #[test]
    fn a_cell_serves_what_it_owns_and_refuses_what_moved() {
        assert_eq!(fence("a", 3).check("acme.echo", Some(Generation(3))), Verdict::Owned);
        assert_eq!(fence("a", 3).check("acme.echo", None), Verdict::Owned);
        let moved = Verdict::Elsewhere {
            cell: "b".into(),
            generation: Generation(4),
            data_plane: Some("http://b:8080".into()),
        };
        assert_eq!(fence("b", 4).check("acme.echo", Some(Generation(3))), moved);
        assert_eq!(fence("b", 4).check("acme.echo", Some(Generation(4))), moved);
        assert_eq!(fence("b", 4).check("acme.echo", None), moved);
        // The router has seen a later assignment than this cell's map: it is ours again.
        assert_eq!(fence("b", 4).check("acme.echo", Some(Generation(5))), Verdict::Owned);
        // Functions the map does not know, and the cell's own, are served.
        assert_eq!(fence("b", 4).check("acme.other", None), Verdict::Serve);
        assert_eq!(fence("b", 4).check("local-fn", None), Verdict::Serve);
    }
}
