//! MPI: the world, this rank's place in it (global and node-local), sharding of a
//! global batch, and the collectives training needs (sum-allreduce of flat
//! buffers, barrier, broadcast, gather of plain vectors to rank 0). It knows nothing
//! of models, files or the project's other types; its errors are typed.
use mpi::collective::SystemOperation;
use mpi::datatype::{Equivalence, PartitionMut};
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
    pub fn init() -> Result<Dist, AlreadyInitialized> {
        let universe = mpi::initialize().ok_or(AlreadyInitialized)?;
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

    /// Element-wise `op` over all ranks, in place.
    fn allreduce<T: Equivalence + Clone>(&self, buf: &mut [T], op: SystemOperation) {
        if self.size == 1 {
            return;
        }
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, op);
    }

    /// Element-wise sum over all ranks, in place.
    pub fn allreduce_sum_f32(&self, buf: &mut [f32]) {
        self.allreduce(buf, SystemOperation::sum());
    }

    /// Element-wise integer sum over all ranks, in place (exact and independent of
    /// the order of the additions, unlike floats; see `train::exact`).
    pub fn allreduce_sum_i64(&self, buf: &mut [i64]) {
        self.allreduce(buf, SystemOperation::sum());
    }

    pub fn allreduce_sum_f64(&self, buf: &mut [f64]) {
        self.allreduce(buf, SystemOperation::sum());
    }

    /// Maximum over ranks (for timing imbalance).
    pub fn allreduce_max_f64(&self, buf: &mut [f64]) {
        self.allreduce(buf, SystemOperation::max());
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

    /// Broadcasts rank 0's bytes; other ranks' `data` is replaced.
    pub fn broadcast_bytes(&self, data: &mut Vec<u8>) {
        if self.size == 1 {
            return;
        }
        let n = self.broadcast_u64(data.len() as u64);
        data.resize(n as usize, 0);
        // MPI counts are i32: large buffers go in pieces.
        for piece in data.chunks_mut(1 << 30) {
            self.world.process_at_rank(0).broadcast_into(piece);
        }
    }

    /// Every rank's `data`, in rank order, on rank 0 (an empty list elsewhere).
    /// Fails on every rank alike when a piece exceeds MPI's i32 counts.
    pub fn gather<T: Equivalence + Clone + Default>(
        &self,
        data: &[T],
    ) -> Result<Vec<Vec<T>>, GatherTooLarge> {
        if self.size == 1 {
            return Ok(vec![data.to_vec()]);
        }
        // Every rank learns every count, so all agree on failing before the gatherv.
        let mut counts = vec![0u64; self.size];
        self.world
            .all_gather_into(&(data.len() as u64), &mut counts[..]);
        let total: u64 = counts.iter().sum();
        if total > i32::MAX as u64 {
            return Err(GatherTooLarge(total));
        }
        let root = self.world.process_at_rank(0);
        if !self.is_root() {
            root.gather_varcount_into(data);
            return Ok(Vec::new());
        }
        let counts: Vec<i32> = counts.iter().map(|&c| c as i32).collect();
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i32, |acc, &c| {
                let d = *acc;
                *acc += c;
                Some(d)
            })
            .collect();
        let mut all = vec![T::default(); total as usize];
        {
            let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            root.gather_varcount_into_root(data, &mut part);
        }
        Ok(counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec())
            .collect())
    }
}

/// MPI can be initialized once per process.
#[derive(Debug, thiserror::Error)]
#[error("MPI was already initialized")]
pub struct AlreadyInitialized;

/// A gather larger than one MPI message can count.
#[derive(Debug, thiserror::Error)]
#[error("gathering {0} elements exceeds MPI's 32-bit counts")]
pub struct GatherTooLarge(pub u64);

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
