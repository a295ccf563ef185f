import Glibc

/// A file written under a temporary name and renamed over its destination only when complete.
///
/// The temporary name `.NAME.tmp-PID-SERIAL` is unique per process and per write, so two
/// threads saving to one path never share a temporary file. `commit` fsyncs the file, renames
/// it and fsyncs the folder, so after a crash or power loss `path` holds the old or the new
/// contents, never a mix. Temporary files of writers that died (their PID no longer runs) are
/// removed when the next write to the same path starts.
final class AtomicFile {
    let path: String
    let tmpPath: String
    private let folder: String
    private var fd: Int32
    private var committed = false

    private nonisolated(unsafe) static var serial = 0
    private static let serialLock = Lock()

    init(_ path: String) throws {
        self.path = path
        let slash = path.lastIndex(of: "/")
        folder = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        try require(!name.isEmpty, "cannot write \(path): not a file name")
        var st = stat()
        try require(stat(folder, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR,
                    "cannot write \(path): folder \(folder) does not exist")
        Self.removeStaleTemporaries(folder: folder, name: name)
        let n = Self.serialLock.locked { Self.serial += 1; return Self.serial }
        tmpPath = (folder == "." && slash == nil ? "" : folder + "/") + ".\(name).tmp-\(getpid())-\(n)"
        fd = open(tmpPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        try require(fd >= 0, "cannot write \(path): \(Self.reason())")
    }

    /// Appends count bytes, retrying partial writes and interruptions.
    func write(_ p: UnsafeRawPointer, _ count: Int) throws {
        var done = 0
        while done < count {
            let n = Glibc.write(fd, p + done, count - done)
            if n < 0 && errno == EINTR { continue }
            try require(n > 0, "cannot write \(path): \(Self.reason())")
            done += n
        }
    }

    /// Makes the file durable and moves it to `path`.
    func commit() throws {
        try require(fsync(fd) == 0, "cannot write \(path): \(Self.reason())")
        let closed = close(fd)
        fd = -1
        try require(closed == 0, "cannot write \(path): \(Self.reason())")
        try require(rename(tmpPath, path) == 0, "cannot write \(path): \(Self.reason())")
        committed = true
        // The rename itself is durable only once the folder is synced.
        let dir = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 { _ = fsync(dir); _ = close(dir) }
    }

    /// Removes the temporary file unless it was committed (safe to call more than once).
    func discard() {
        if fd >= 0 { _ = close(fd); fd = -1 }
        if !committed { _ = unlink(tmpPath) }
    }

    private static func reason() -> String { "\(String(cString: strerror(errno))) (errno \(errno))" }

    /// Deletes `.NAME.tmp-PID-*` files in folder whose PID is not a running process.
    private static func removeStaleTemporaries(folder: String, name: String) {
        guard let dir = opendir(folder) else { return }
        defer { closedir(dir) }
        let prefix = ".\(name).tmp-"
        while let entry = readdir(dir) {
            let file = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            guard file.hasPrefix(prefix),
                  let pid = Int32(file.dropFirst(prefix.count).prefix { $0 != "-" }) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH { _ = unlink(folder + "/" + file) }
        }
    }
}
