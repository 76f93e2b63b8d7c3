//! MPI: the world, this rank's place in it (global and node-local), sharding of a
//! global batch, and the collectives training needs (sum-allreduce of flat
//! buffers, barrier, broadcast). It knows nothing of models.
use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use std::ops::Range;

pub struct Dist {
    // Dropping the universe finalizes MPI; keep it for the life of the program.
    _universe: mpi::environment::Universe,
    world: SimpleCommunicator,
    pub rank: usize,
    pub size: usize,
    /// Rank among the ranks on this node (from an MPI shared-memory split).
    pub local_rank: usize,
    pub local_size: usize,
    pub host: String,
}

impl Dist {
    /// Initializes MPI (also works without mpirun, as a singleton).
    pub fn init() -> anyhow::Result<Dist> {
        let universe =
            mpi::initialize().ok_or_else(|| anyhow::anyhow!("MPI was already initialized"))?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        let local = world.split_shared(world.rank());
        let host = mpi::environment::processor_name().unwrap_or_else(|_| "unknown".into());
        Ok(Dist {
            local_rank: local.rank() as usize,
            local_size: local.size() as usize,
            _universe: universe,
            world,
            rank,
            size,
            host,
        })
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// This rank's contiguous share of `0..n` (the first `n % size` ranks get one more).
    pub fn shard(&self, n: usize) -> Range<usize> {
        shard_of(n, self.rank, self.size)
    }

    /// Element-wise sum over all ranks, in place.
    pub fn allreduce_sum_f32(&self, buf: &mut [f32]) {
        if self.size == 1 {
            return;
        }
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    pub fn allreduce_sum_f64(&self, buf: &mut [f64]) {
        if self.size == 1 {
            return;
        }
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    /// Maximum over ranks (for timing imbalance).
    pub fn allreduce_max_f64(&self, buf: &mut [f64]) {
        if self.size == 1 {
            return;
        }
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::max());
    }

    pub fn barrier(&self) {
        self.world.barrier();
    }

    /// CPU cores this rank should use for intra-op threads. When the launcher has
    /// already bound the rank to a CPU set smaller than the node (srun
    /// --cpus-per-task, mpirun --bind-to), that set is the rank's own; otherwise
    /// the node's cores are shared among its ranks.
    pub fn cpus_per_rank(&self) -> usize {
        let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        let online = usize::try_from(online).unwrap_or(usable).max(1);
        if usable < online {
            usable
        } else {
            (online / self.local_size).max(1)
        }
    }

    /// Ends every rank of the job (after an error on this one, so no rank hangs in a collective).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Broadcasts a flag from rank 0 (e.g. "rank 0 failed, stop").
    pub fn broadcast_u64(&self, value: u64) -> u64 {
        let mut v = value;
        self.world.process_at_rank(0).broadcast_into(&mut v);
        v
    }
}

/// Contiguous share of `0..n` of rank `rank` out of `size`.
pub fn shard_of(n: usize, rank: usize, size: usize) -> Range<usize> {
    let base = n / size;
    let extra = n % size;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    start..start + len
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn shards_cover_exactly_once() {
        for n in 0..20 {
            for size in 1..6 {
                let mut all = Vec::new();
                for r in 0..size {
                    all.extend(shard_of(n, r, size));
                }
                assert_eq!(all, (0..n).collect::<Vec<_>>());
            }
        }
    }
}
