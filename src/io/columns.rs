//! Columnar stores: a list of items (molecules) kept as named flat columns of small
//! integers, with offset columns (`u64[k+1]`, rows of item `m`: `o[m]..o[m+1]`)
//! saying which rows of the other columns belong to which item. The dataset
//! file's molecule records (`records`), assembly candidates (`candidates`) and
//! junction trees (`trees`) are such stores; a store names its columns once
//! (`Columnar`) and this module does the rest for all of them:
//! - `write` / `read`: the store as an HDF5 group, one dataset per column in the
//!   order named (`Shape::Rows(w)` columns as `[n/w, w]` matrices);
//! - `append`: a later block of the same list (offsets rebased);
//! - `offsets_consistent`: the check every offset column needs;
//! - `unflatten`: a store back from plain vectors (`Column`), e.g. each rank's
//!   columns after an MPI gather of `Columnar::columns`.
use super::h5;
use hdf5::Group;

/// How a column's values are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value per row, stored as a vector.
    Flat,
    /// Offsets into other columns (starts at 0; appended blocks are rebased).
    Offsets,
    /// `w` values per row, stored as an `[n, w]` matrix.
    Rows(usize),
}

/// A column's name (its dataset in the group) and layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub shape: Shape,
}

impl Spec {
    pub const fn flat(name: &'static str) -> Spec {
        Spec {
            name,
            shape: Shape::Flat,
        }
    }

    pub const fn offsets(name: &'static str) -> Spec {
        Spec {
            name,
            shape: Shape::Offsets,
        }
    }

    pub const fn rows(name: &'static str, width: usize) -> Spec {
        Spec {
            name,
            shape: Shape::Rows(width),
        }
    }
}

/// A column's values, owned (one of the element types the stores use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

/// A column's values, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum ColRef<'a> {
    U8(&'a [u8]),
    I8(&'a [i8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
}

/// A column's values, borrowed to be replaced or extended.
#[derive(Debug)]
pub enum ColMut<'a> {
    U8(&'a mut Vec<u8>),
    I8(&'a mut Vec<i8>),
    U16(&'a mut Vec<u16>),
    U32(&'a mut Vec<u32>),
    U64(&'a mut Vec<u64>),
}

macro_rules! conversions {
    ($($t:ty => $v:ident),*) => {$(
        impl<'a> From<&'a Vec<$t>> for ColRef<'a> {
            fn from(v: &'a Vec<$t>) -> Self {
                ColRef::$v(v)
            }
        }
        impl<'a> From<&'a mut Vec<$t>> for ColMut<'a> {
            fn from(v: &'a mut Vec<$t>) -> Self {
                ColMut::$v(v)
            }
        }
    )*};
}
conversions!(u8 => U8, i8 => I8, u16 => U16, u32 => U32, u64 => U64);

/// Runs `$body` with `$v` bound to the slice or vector inside any column variant.
macro_rules! each {
    ($e:expr, $enum:ident, $v:ident => $body:expr) => {
        match $e {
            $enum::U8($v) => $body,
            $enum::I8($v) => $body,
            $enum::U16($v) => $body,
            $enum::U32($v) => $body,
            $enum::U64($v) => $body,
        }
    };
}

/// The two column lists of a `Columnar` store (`columns`, `columns_mut`), written
/// once from its field names, in `COLUMNS` order.
macro_rules! column_lists {
    ($($field:ident),+ $(,)?) => {
        fn columns(&self) -> Vec<$crate::io::columns::ColRef<'_>> {
            vec![$((&self.$field).into()),+]
        }

        fn columns_mut(&mut self) -> Vec<$crate::io::columns::ColMut<'_>> {
            vec![$((&mut self.$field).into()),+]
        }
    };
}
pub(crate) use column_lists;

/// A store of named columns. `default()` is the empty store (offset columns `[0]`);
/// `columns` and `columns_mut` list the columns in `COLUMNS` order.
pub trait Columnar: Default {
    const COLUMNS: &'static [Spec];
    fn columns(&self) -> Vec<ColRef<'_>>;
    fn columns_mut(&mut self) -> Vec<ColMut<'_>>;
}

/// Writes `store` as group `name` of `parent`: one dataset per column, in order.
pub fn write<S: Columnar>(store: &S, parent: &Group, name: &str) -> hdf5::Result<()> {
    let g = parent.create_group(name)?;
    for (spec, col) in S::COLUMNS.iter().zip(store.columns()) {
        match spec.shape {
            Shape::Rows(w) => each!(col, ColRef, v => h5::write_matrix(&g, spec.name, v, w)?),
            Shape::Flat | Shape::Offsets => {
                each!(col, ColRef, v => h5::write_vec(&g, spec.name, v)?)
            }
        }
    }
    Ok(())
}

/// Reads group `name` of `parent` (unchecked: the store's own check comes next).
pub fn read<S: Columnar>(parent: &Group, name: &str) -> hdf5::Result<S> {
    let g = parent.group(name)?;
    let mut store = S::default();
    for (spec, col) in S::COLUMNS.iter().zip(store.columns_mut()) {
        each!(col, ColMut, v => *v = h5::read_vec(&g, spec.name)?);
    }
    Ok(store)
}

/// Appends `src` to `dst`, an offset array continuing from `dst`'s last entry.
fn append_offsets(dst: &mut Vec<u64>, src: &[u64]) {
    let base = dst.last().copied().unwrap_or(0);
    dst.extend(src.iter().skip(1).map(|&o| o + base));
}

/// Appends the items of `src` (a later block of the same list) to `dst`.
pub fn append<S: Columnar>(dst: &mut S, src: &S) {
    for ((spec, d), s) in S::COLUMNS.iter().zip(dst.columns_mut()).zip(src.columns()) {
        match (d, s) {
            (ColMut::U64(d), ColRef::U64(s)) if spec.shape == Shape::Offsets => {
                append_offsets(d, s)
            }
            (ColMut::U8(d), ColRef::U8(s)) => d.extend_from_slice(s),
            (ColMut::I8(d), ColRef::I8(s)) => d.extend_from_slice(s),
            (ColMut::U16(d), ColRef::U16(s)) => d.extend_from_slice(s),
            (ColMut::U32(d), ColRef::U32(s)) => d.extend_from_slice(s),
            (ColMut::U64(d), ColRef::U64(s)) => d.extend_from_slice(s),
            // The same store type lists the same column types.
            _ => unreachable!("column types of one store type differ"),
        }
    }
}

/// A column list that does not match the store's (`unflatten`).
#[derive(Debug, thiserror::Error)]
#[error("column {column} is missing or of another type")]
pub struct ColumnMismatch {
    pub column: &'static str,
}

/// The store whose columns are `cols` (in `COLUMNS` order, as `columns` lists them).
pub fn unflatten<S: Columnar>(cols: Vec<Column>) -> Result<S, ColumnMismatch> {
    let mut store = S::default();
    let mut cols = cols.into_iter();
    for (spec, slot) in S::COLUMNS.iter().zip(store.columns_mut()) {
        let bad = || ColumnMismatch { column: spec.name };
        match (slot, cols.next().ok_or_else(bad)?) {
            (ColMut::U8(d), Column::U8(v)) => *d = v,
            (ColMut::I8(d), Column::I8(v)) => *d = v,
            (ColMut::U16(d), Column::U16(v)) => *d = v,
            (ColMut::U32(d), Column::U32(v)) => *d = v,
            (ColMut::U64(d), Column::U64(v)) => *d = v,
            _ => return Err(bad()),
        }
    }
    Ok(store)
}

/// Offsets that start at 0, never decrease and end at `len`, the length they index.
pub fn offsets_consistent(o: &[u64], len: usize) -> bool {
    o.first() == Some(&0)
        && o.windows(2).all(|w| w[0] <= w[1])
        && o.last().copied() == Some(len as u64)
}
