//! Batched molecular graphs as index tensors: all atoms of a batch stacked in one
//! matrix, edges as (src, dst) index vectors into it, and the graph of each atom,
//! so message passing and readout are a handful of gather/scatter kernels per
//! batch rather than a loop over molecules.
use crate::chem::MolGraph;
use tch::{Device, Kind, Tensor};

pub struct GraphBatch {
    /// `[n_atoms, atom_dim]`
    pub atom_x: Tensor,
    /// `[n_edges, edge_dim]`
    pub edge_x: Tensor,
    /// `[n_edges]` source atom of each directed edge (batch-global index)
    pub src: Tensor,
    /// `[n_edges]` destination atom of each directed edge
    pub dst: Tensor,
    /// `[n_atoms]` which graph each atom belongs to
    pub graph_of_atom: Tensor,
    pub n_graphs: i64,
}

impl GraphBatch {
    /// Stacks graphs (all with the same feature widths) onto `device`.
    pub fn new(
        graphs: &[&MolGraph],
        atom_dim: usize,
        edge_dim: usize,
        device: Device,
    ) -> GraphBatch {
        let n_atoms: usize = graphs.iter().map(|g| g.n_atoms).sum();
        let n_edges: usize = graphs.iter().map(|g| g.n_edges()).sum();
        let mut atom_x = Vec::with_capacity(n_atoms * atom_dim);
        let mut edge_x = Vec::with_capacity(n_edges * edge_dim);
        let mut src = Vec::with_capacity(n_edges);
        let mut dst = Vec::with_capacity(n_edges);
        let mut graph_of_atom = Vec::with_capacity(n_atoms);
        let mut offset = 0i64;
        for (gi, g) in graphs.iter().enumerate() {
            debug_assert_eq!(g.atom_dim, atom_dim);
            debug_assert_eq!(g.edge_dim, edge_dim);
            atom_x.extend_from_slice(&g.atom_x);
            edge_x.extend_from_slice(&g.edge_x);
            src.extend(g.src.iter().map(|&s| s + offset));
            dst.extend(g.dst.iter().map(|&d| d + offset));
            graph_of_atom.extend(std::iter::repeat_n(gi as i64, g.n_atoms));
            offset += g.n_atoms as i64;
        }
        let mat = |v: &[f32], rows: usize, cols: usize| {
            Tensor::from_slice(v)
                .view([rows as i64, cols as i64])
                .to_device(device)
        };
        GraphBatch {
            atom_x: mat(&atom_x, n_atoms, atom_dim),
            edge_x: mat(&edge_x, n_edges, edge_dim),
            src: Tensor::from_slice(&src).to_device(device),
            dst: Tensor::from_slice(&dst).to_device(device),
            graph_of_atom: Tensor::from_slice(&graph_of_atom).to_device(device),
            n_graphs: graphs.len() as i64,
        }
    }

    pub fn n_atoms(&self) -> i64 {
        self.atom_x.size()[0]
    }

    pub fn device(&self) -> Device {
        self.atom_x.device()
    }

    pub fn kind(&self) -> Kind {
        self.atom_x.kind()
    }
}

/// Maximum of `values [n]` within each segment (`segment [n]` holds each value's
/// segment in `0..n_segments`); detached: callers use it as a softmax shift.
/// Every segment must hold at least one value.
pub fn segment_max(values: &Tensor, segment: &Tensor, n_segments: i64) -> Tensor {
    Tensor::zeros([n_segments], (values.kind(), values.device())).internal_scatter_reduce(
        0,
        segment,
        &values.detach(),
        "amax",
        false,
    )
}
