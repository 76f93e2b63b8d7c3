//! The models of the pipeline (`Pipeline`: the JT-VAE and the MPNN in one
//! VarStore, with this rank's knowledge source and its feature cache) and what
//! querying them takes: decoding latents as a batch, featurizing molecules
//! through the cache, embedding graphs (`to_vec_f32` reads a tensor back); and
//! the parameter groups of the VarStore (JT-VAE, MPNN, the JT-VAE's decoder) as
//! the models place them.
use crate::blackbox::cache::Answer;
use crate::blackbox::{FeatureCache, KnowledgeSource, SourceContext, SourceStats};
use crate::chem::{Featurizer, MolGraph};
use crate::config::{Config, DecoderMode, Group, JtvaeConfig, ZoConfig};
use crate::data::samples::Example;
use crate::io::dataset::Dataset;
use crate::jtvae::candidates::LabelGraphs;
use crate::jtvae::decode::{DecodeTimes, Decoded};
use crate::jtvae::model::JtVae;
use crate::jtvae::sample::{SampleKeys, Trace};
use crate::models::batch::GraphBatch;
use crate::models::mpnn::{Mpnn, MpnnDims};
use std::cell::RefCell;
use std::path::PathBuf;
use tch::{nn, nn::VarStore, Device, Kind, Tensor};

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{}: no JT-VAE vocabulary in this dataset file; it was prepared without a [jtvae] section (delete it and run `zo-hpc prepare` again)", .path.display())]
    NoVocabulary { path: PathBuf },
    /// The rank's knowledge source could not be built.
    #[error(transparent)]
    Source(crate::blackbox::build::BuildError),
}

/// Decode workers on this rank (each decodes part of a batch with one libtorch
/// thread): `jtvae.decode_threads`, by default the rank's share of the node's
/// cores (`cpus_per_rank`).
pub fn decode_threads(cfg: &Config, cpus_per_rank: usize) -> usize {
    cfg.jtvae
        .as_ref()
        .and_then(|j| j.decode_threads)
        .unwrap_or(cpus_per_rank)
        .max(1)
}

/// A tensor's values as a flat f32 vector on the CPU.
pub fn to_vec_f32(t: &Tensor) -> Vec<f32> {
    let flat = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .flatten(0, -1)
        .contiguous();
    Vec::<f32>::try_from(&flat).expect("a contiguous CPU f32 tensor converts to Vec<f32>")
}

/// The VarStore name prefix of the variables under `p`.
fn path_name(p: &nn::Path) -> String {
    p.components().collect::<Vec<_>>().join(".")
}

/// Whether VarStore variable `name` lies under the path named `prefix`.
fn under(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The models of the pipeline and what querying them needs.
pub struct Pipeline {
    pub jtvae: JtVae,
    pub mpnn: Mpnn,
    pub vocab: Vec<String>,
    /// The MPNN's featurizer (the dataset's kept columns).
    pub featurizer: Featurizer,
    /// Width of the MPNN's atom rows: the featurizer's plus the source's extra columns.
    pub atom_dim: usize,
    pub device: Device,
    pub jc: JtvaeConfig,
    source: Box<dyn KnowledgeSource>,
    cache: RefCell<FeatureCache>,
    labels: RefCell<LabelGraphs>,
    times: RefCell<DecodeTimes>,
    /// Decode workers (`decode_threads`).
    decode_threads: usize,
    /// VarStore paths of the JT-VAE and the MPNN.
    jtvae_path: String,
    mpnn_path: String,
}

impl Pipeline {
    /// Builds the JT-VAE (`vs / "jtvae"`) and the MPNN (`vs / "mpnn"`) for `ds`, and
    /// the knowledge source of rank `rank`, which has `cpus_per_rank` cores.
    pub fn new(
        cfg: &Config,
        ds: &Dataset,
        vs: &VarStore,
        rank: usize,
        cpus_per_rank: usize,
    ) -> Result<Pipeline, PipelineError> {
        let decode_threads = decode_threads(cfg, cpus_per_rank);
        let path = cfg.dataset_path();
        let Some(j) = &ds.jtvae else {
            return Err(PipelineError::NoVocabulary { path });
        };
        let jc = cfg.jtvae.clone().unwrap_or_default();
        let full = Featurizer::full();
        let jtvae_root = vs.root() / "jtvae";
        let jtvae = JtVae::new(
            &jtvae_root,
            j.vocab.len() as i64,
            full.atom_dim(),
            full.bond_dim(),
            &jc,
        );
        let ctx = SourceContext::new(cfg, rank, cpus_per_rank);
        let source =
            crate::blackbox::build(cfg, &ds.featurizer, &ctx).map_err(PipelineError::Source)?;
        let atom_dim = ds.featurizer.atom_dim() + source.extra_atom_columns().len();
        let dims = MpnnDims {
            atom_dim: atom_dim as i64,
            edge_dim: ds.featurizer.bond_dim() as i64,
        };
        let mpnn_root = vs.root() / "mpnn";
        let mpnn = Mpnn::new(&mpnn_root, dims, &cfg.mpnn);
        Ok(Pipeline {
            jtvae,
            mpnn,
            vocab: j.vocab.clone(),
            featurizer: ds.featurizer.clone(),
            atom_dim,
            device: vs.device(),
            jc,
            source,
            cache: RefCell::new(FeatureCache::new(cfg.zo.cache_size).checking(cfg.zo.cache_check)),
            labels: RefCell::new(LabelGraphs::default()),
            times: RefCell::new(DecodeTimes::default()),
            decode_threads,
            jtvae_path: path_name(&jtvae_root),
            mpnn_path: path_name(&mpnn_root),
        })
    }

    /// Whether VarStore variable `name` is a parameter of the JT-VAE.
    pub fn is_jtvae_param(&self, name: &str) -> bool {
        under(&self.jtvae_path, name)
    }

    /// Whether VarStore variable `name` is a parameter of the MPNN.
    pub fn is_mpnn_param(&self, name: &str) -> bool {
        under(&self.mpnn_path, name)
    }

    /// Whether VarStore variable `name` is a parameter of the decoder v (tree
    /// decoder + assembly scorer), as the JT-VAE places it.
    pub fn is_decoder_param(&self, name: &str) -> bool {
        self.jtvae.is_decoder_var(name)
    }

    /// The `zo.freeze` group of VarStore variable `name`, if it has one.
    pub fn group_of(&self, name: &str) -> Option<Group> {
        if self.is_jtvae_param(name) && !self.is_decoder_param(name) {
            Some(Group::Encoder)
        } else if name.starts_with("mpnn.embed.") {
            Some(Group::MpnnEmbed)
        } else if name.starts_with("mpnn.head.") {
            Some(Group::MpnnHead)
        } else {
            None
        }
    }

    /// Whether Stage 2 with settings `zc` trains variable `name` (and so whether the
    /// Stage-2 checkpoint holds it): not a frozen decoder's, not a `zo.freeze` group's.
    pub fn trained_in_stage2(&self, name: &str, zc: &ZoConfig) -> bool {
        let frozen_decoder = zc.decoder == DecoderMode::Frozen && self.is_decoder_param(name);
        let frozen_group = self.group_of(name).is_some_and(|g| zc.freeze.contains(&g));
        !(frozen_decoder || frozen_group)
    }

    /// Decodes latents (`n × latent`, row-major) as one batch (no gradient).
    pub fn decode_many(&self, z: &[f32]) -> Vec<Option<Decoded>> {
        let l = self.jtvae.latent();
        if z.is_empty() {
            return Vec::new();
        }
        let t = Tensor::from_slice(z).view([-1, l]).to_device(self.device);
        self.jtvae
            .decode_batch(
                &t,
                &self.vocab,
                &mut self.labels.borrow_mut(),
                &mut self.times.borrow_mut(),
                self.decode_threads,
            )
            .into_iter()
            .map(Result::ok)
            .collect()
    }

    /// Decodes latents (`n × latent`, row-major) with the stochastic decoder at
    /// temperature `tau` (`jtvae::sample`; row r keyed by `keys.ids[r]`), no
    /// gradient: each molecule (None: the decode failed) with its trace.
    pub fn decode_many_sampled(
        &self,
        z: &[f32],
        keys: SampleKeys,
        tau: f64,
    ) -> Vec<(Option<Decoded>, Trace)> {
        if z.is_empty() {
            return Vec::new();
        }
        let t = Tensor::from_slice(z)
            .view([-1, self.jtvae.latent()])
            .to_device(self.device);
        self.jtvae
            .decode_sampled(
                &t,
                keys,
                tau,
                (&self.vocab, &mut self.labels.borrow_mut()),
                &mut self.times.borrow_mut(),
                self.decode_threads,
            )
            .into_iter()
            .map(|(r, trace)| (r.ok(), trace))
            .collect()
    }

    /// The knowledge source's running totals of failures and restarts.
    pub fn source_stats(&self) -> SourceStats {
        self.source.stats()
    }

    /// Cache hits whose fresh answer differed (`zo.cache_check`), since built.
    pub fn cache_differ(&self) -> u64 {
        self.cache.borrow().differ()
    }

    /// Black-box answers for SMILES through the cache; returns (answers, hits).
    pub fn featurize(&self, smiles: &[String]) -> (Vec<Answer>, usize) {
        let (a, s) = self.cache.borrow_mut().query(self.source.as_ref(), smiles);
        (a, s.hits)
    }

    /// Black-box answers for decoded molecules through the cache, by their
    /// canonical SMILES. A miss is featurized from that SMILES, not from the
    /// RDKit molecule the decoder built: that one differs from the parsed molecule
    /// in atom and bond order and in how hydrogens are recorded (implicit, where
    /// parsing a bracket atom such as [nH] gives explicit), so its features would
    /// depend on how the molecule was reached and the MPNN would see hydrogen
    /// columns unlike those of its training molecules.
    pub fn featurize_decoded(&self, items: &[&Decoded]) -> (Vec<Answer>, usize) {
        let smiles: Vec<String> = items.iter().map(|d| d.smiles.clone()).collect();
        self.featurize(&smiles)
    }

    /// The graphs as one MPNN input batch on the pipeline's device.
    pub fn batch(&self, graphs: &[&MolGraph]) -> GraphBatch {
        GraphBatch::new(
            graphs,
            self.atom_dim,
            self.featurizer.bond_dim(),
            self.device,
        )
    }

    /// MPNN embeddings (no gradient) of graphs, in chunks of `chunk`.
    pub fn embed_nograd(&self, graphs: &[&MolGraph], chunk: usize) -> Tensor {
        tch::no_grad(|| {
            let parts: Vec<Tensor> = graphs
                .chunks(chunk.max(1))
                .map(|c| self.mpnn.embed.forward(&self.batch(c)))
                .collect();
            Tensor::cat(&parts, 0)
        })
    }

    /// Means of the latent of `exs` (no gradient), one row each.
    pub(crate) fn encode_means(&self, exs: &[&Example]) -> Tensor {
        tch::no_grad(|| {
            let samples: Vec<_> = exs.iter().map(|e| e.sample()).collect();
            let (g, t) = self.jtvae.batches(&samples, self.device);
            self.jtvae.encode(&g, &t).0
        })
    }
}
