import SafeTensors
import Tensor

/// `safetensors-read`: the two costs of loading a checkpoint.
///
/// - `open_header`: `SafeTensorsFile(path:)` — map the file and parse/validate the header,
///   no tensor data (peer: `safetensors.safe_open(path, "np")` plus listing its keys).
/// - `read_all_f32`: open, then every tensor as an F32 tensor, all held until the end (peers:
///   `safetensors.numpy.load_file` + `astype(np.float32)`, and `safetensors.torch.load_file`
///   + `.float()`). Measured with the file in the page cache (the warmup run reads it), so
///   the figure is the reader's and conversion's cost, not the disk's.
/// `tag` (e.g. "f16") is appended to the names, to tell files apart in one report.
func runSafeTensorsRead(path: String, tag: String?, runs: Int) throws -> [Measurement] {
    let suffix = tag.map { "_\($0)" } ?? ""
    let probe = try SafeTensorsFile(path: path)
    let fileSize = probe.fileSize, tensorCount = probe.tensorInfos.count
    let names = probe.names

    let readAll = {
        do {
            let file = try SafeTensorsFile(path: path)
            var tensors: [Tensor] = []
            tensors.reserveCapacity(names.count)
            for name in file.names { tensors.append(try file.f32Tensor(named: name)) }
            blackHole(tensors)
        } catch {
            fatalError("\(error)") // the probe above opened the same file
        }
    }
    let read = timeBest(warmup: 1, runs: runs, readAll)

    let openOnly = {
        do { blackHole(try SafeTensorsFile(path: path)) } catch { fatalError("\(error)") }
    }
    let first = now(); openOnly(); let single = now() - first
    let open = timeBest(warmup: 3, runs: 10, repetitions: repetitions(forCallTaking: single, target: 0.05), openOnly)

    let gigabytes = Double(fileSize) / 1e9
    return [
        Measurement(name: "read_all_f32\(suffix)", value: read.best, unit: "s", better: .lower, bestSeconds: read.best,
                    spread: read.worst / read.best,
                    note: String(format: "%d tensors, %.2f GB file, %.2f GB/s of file", tensorCount, gigabytes,
                                 gigabytes / read.best)),
        Measurement(name: "open_header\(suffix)", value: open.best * 1e3, unit: "ms", better: .lower, bestSeconds: open.best,
                    spread: open.worst / open.best,
                    note: "SafeTensorsFile(path:): mmap + header parse and validation, \(tensorCount) tensors"),
    ]
}
