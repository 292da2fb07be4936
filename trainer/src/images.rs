//! ImageFolder datasets: the layout (class folders, or train/ val/ test/
//! folders of them) and one pass that fetches, hashes and decodes every
//! image. The pass holds at most `reads` files and decoded images at once,
//! whatever the dataset's size; what it keeps of the pixels is the caller's
//! choice ([`DataPath`]): nothing (inspection), all of them in memory, or an
//! on-disk cache that training streams from.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use hone_crds::contract::InputKind;
use hone_storage::{Location, ObjectInfo};

use crate::dataset::{
    DataError, DataOptions, Dataset, IMAGE_EXTENSIONS, Inputs, ManifestEntry, Split, manifest_digest,
    seeded_split, sha256_hex, summarize,
};
use crate::stream::{DataPath, PixelCache, Residency, Stored};

/// Folder names that mark a source already split into train/val/test.
const SPLIT_FOLDERS: &[&str] = &["train", "val", "validation", "test"];

/// Where one image file sits in the layout.
struct ImageFile {
    info: ObjectInfo,
    class: String,
    folder_split: Option<&'static str>,
}

fn classify(objects: Vec<ObjectInfo>) -> Result<(Vec<ImageFile>, bool), DataError> {
    let top: BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| o.relative_path.split_once('/').map(|(dir, _)| dir))
        .filter(|d| !d.starts_with('.'))
        .collect();
    let folder_split = top.contains("train") && top.iter().all(|d| SPLIT_FOLDERS.contains(d));
    let mut files = Vec::new();
    for info in objects {
        let parts: Vec<&str> = info.relative_path.split('/').collect();
        if parts.iter().any(|p| p.starts_with('.')) {
            continue; // hidden files and folders (.DS_Store, .git) are not data
        }
        let (split, class) = match (folder_split, parts.as_slice()) {
            (false, [class, _file]) => (None, (*class).to_owned()),
            (true, [split, class, _file]) => {
                let split = match *split {
                    "train" => "train",
                    "val" | "validation" => "val",
                    _ => "test",
                };
                (Some(split), (*class).to_owned())
            }
            (_, [_file]) => continue, // files beside the class folders (README, LICENSE)
            _ => {
                return Err(DataError::Layout(format!(
                    "{}: unexpected nesting; expected <class>/<image> or train|val|test/<class>/<image>",
                    info.relative_path
                )));
            }
        };
        let ext = info.relative_path.rsplit('.').next().unwrap_or_default().to_ascii_lowercase();
        if !IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            return Err(DataError::UnsupportedFile { path: info.relative_path });
        }
        files.push(ImageFile { info, class, folder_split: split });
    }
    Ok((files, folder_split))
}

/// Class folders with no files, for sources on a local filesystem (object
/// stores have no empty folders).
fn empty_local_class_folders(source: &str, folder_split: bool) -> Vec<String> {
    let Some(root) =
        url::Url::parse(source).ok().filter(|u| u.scheme() == "file").and_then(|u| u.to_file_path().ok())
    else {
        return Vec::new();
    };
    let roots: Vec<std::path::PathBuf> = if folder_split {
        SPLIT_FOLDERS.iter().map(|s| root.join(s)).filter(|p| p.is_dir()).collect()
    } else {
        vec![root.clone()]
    };
    let mut empty = Vec::new();
    for dir in roots {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if path.is_dir()
                && !hidden
                && std::fs::read_dir(&path).map(|mut d| d.next().is_none()).unwrap_or(false)
            {
                empty.push(path.strip_prefix(&root).unwrap_or(&path).display().to_string());
            }
        }
    }
    empty.sort();
    empty
}

/// Decodes `bytes` to planar `C x H x W` pixels at `w x h` (resized only
/// when the image has another size).
pub fn decode(bytes: &[u8], path: &str, w: u32, h: u32, c: u32) -> Result<Vec<u8>, DataError> {
    let decoded = image::load_from_memory(bytes)
        .map_err(|e| DataError::Undecodable { path: path.to_owned(), reason: e.to_string() })?;
    let resized = if decoded.width() == w && decoded.height() == h {
        decoded
    } else {
        decoded.resize_exact(w, h, image::imageops::FilterType::Triangle)
    };
    if c == 1 {
        return Ok(resized.to_luma8().into_raw());
    }
    let rgb = resized.to_rgb8();
    let raw = rgb.as_raw();
    let plane = (w * h) as usize;
    let mut planar = vec![0u8; plane * 3];
    for (p, px) in raw.chunks_exact(3).enumerate() {
        planar[p] = px[0];
        planar[plane + p] = px[1];
        planar[2 * plane + p] = px[2];
    }
    Ok(planar)
}

/// Per-channel mean and mean square of planar pixels, in [0, 1].
pub fn channel_moments(pixels: &[u8], channels: usize) -> Vec<[f64; 2]> {
    let plane = pixels.len() / channels.max(1);
    pixels
        .chunks(plane.max(1))
        .take(channels)
        .map(|ch| {
            let (mut sum, mut sq) = (0u64, 0u64);
            for &b in ch {
                sum += u64::from(b);
                sq += u64::from(b) * u64::from(b);
            }
            let n = ch.len().max(1) as f64;
            [sum as f64 / n / 255.0, sq as f64 / n / (255.0 * 255.0)]
        })
        .collect()
}

/// One file after the pass: size, hash, pixels and their moments.
struct Decoded {
    size: u64,
    sha256: String,
    pixels: Vec<u8>,
    moments: Vec<[f64; 2]>,
}

pub(crate) async fn load(opts: &DataOptions, keep: Option<&DataPath>) -> Result<Dataset, DataError> {
    if opts.channels != 1 && opts.channels != 3 {
        return Err(DataError::Layout(format!("channels must be 1 or 3, not {}", opts.channels)));
    }
    if opts.width == 0 || opts.height == 0 || opts.width > 8192 || opts.height > 8192 {
        return Err(DataError::Layout(format!(
            "image size {}x{} is out of range (1 to 8192 pixels a side)",
            opts.width, opts.height
        )));
    }
    let root = Location::parse(&opts.source)?;
    let (files, folder_split) = classify(root.list().await?)?;
    if let Some(path) = empty_local_class_folders(&opts.source, folder_split).into_iter().next() {
        return Err(DataError::EmptyClass { path });
    }
    if files.is_empty() {
        return Err(DataError::Layout(format!(
            "{}: no images found (expected <class>/<image> folders)",
            opts.source
        )));
    }
    let classes: Vec<String> =
        files.iter().map(|f| f.class.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let (w, h, c) = (opts.width, opts.height, opts.channels);
    let sample_bytes = w as usize * h as usize * c as usize;
    let residency = keep.map_or(Residency::Nothing, |k| k.residency(files.len(), sample_bytes));
    let reads = keep.map_or(DataPath::default().reads, |k| k.reads).max(1);
    let cache = match &residency {
        Residency::Cache(dir) => Some(Arc::new(PixelCache::create(dir, files.len(), sample_bytes)?)),
        _ => None,
    };
    let mut images = Vec::new();
    if residency == Residency::Memory {
        images.reserve_exact(files.len() * sample_bytes);
    }

    // Fetch `reads` files at once; hash and decode each on the blocking pool.
    let mut decoded = futures::stream::iter(files.iter().map(|f| {
        let loc = root.join(&f.info.relative_path);
        let path = f.info.relative_path.clone();
        async move {
            let bytes = loc.read().await?;
            tokio::task::spawn_blocking(move || {
                let pixels = decode(&bytes, &path, w, h, c)?;
                Ok::<_, DataError>(Decoded {
                    size: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                    moments: channel_moments(&pixels, c as usize),
                    pixels,
                })
            })
            .await
            .map_err(|e| DataError::Layout(format!("decoding worker failed: {e}")))?
        }
    }))
    .buffered(reads);

    let mut labels = Vec::with_capacity(files.len());
    let mut manifest = Vec::with_capacity(files.len());
    let mut hashes = Vec::with_capacity(files.len());
    let mut moments = Vec::with_capacity(files.len() * c as usize);
    let mut size_bytes = 0u64;
    for (i, file) in files.iter().enumerate() {
        let Some(sample) = decoded.next().await else { break };
        let sample = sample?;
        match (&residency, &cache) {
            (Residency::Memory, _) => images.extend_from_slice(&sample.pixels),
            (_, Some(cache)) => cache.write(i, &sample.pixels)?,
            _ => {}
        }
        labels.push(classes.binary_search(&file.class).unwrap_or_default() as i64);
        size_bytes += sample.size;
        moments.extend(sample.moments);
        manifest.push(ManifestEntry {
            path: file.info.relative_path.clone(),
            size: sample.size,
            sha256: sample.sha256.clone(),
        });
        hashes.push(sample.sha256);
    }
    drop(decoded);
    let split = if folder_split {
        let mut split = Split::default();
        for (i, f) in files.iter().enumerate() {
            match f.folder_split {
                Some("val") => split.val.push(i),
                Some("test") => split.test.push(i),
                _ => split.train.push(i),
            }
        }
        split
    } else {
        seeded_split(labels.len(), opts.validation, opts.test, opts.split_seed)
    };
    let summary = summarize(manifest_digest(&mut manifest), &labels, &classes, size_bytes);
    let inputs = match residency {
        Residency::Memory => Inputs::Images(images),
        _ => Inputs::Stored(Stored { root, cache }),
    };
    Ok(Dataset {
        kind: InputKind::Image,
        classes,
        feature_names: Vec::new(),
        sample_shape: vec![i64::from(c), i64::from(h), i64::from(w)],
        inputs,
        labels,
        targets: Vec::new(),
        split,
        sample_paths: files.iter().map(|f| f.info.relative_path.clone()).collect(),
        sample_sha256: hashes,
        channel_moments: moments,
        summary,
    })
}
