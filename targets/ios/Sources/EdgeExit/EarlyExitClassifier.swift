// EarlyExitClassifier: the bundle's segments (one ExecuTorch .pte, XNNPACK) run one after another, and a sample stops
// at the first exit whose score reaches that exit's threshold. A thin wrapper over the edgeexit C API (edgeexit.h),
// the same one the Android JNI glue and the C++ runner call.
import EdgeExitCore
import Foundation

/// A failure of the native runtime; `message` reads "what failed | got: ... | expected: ... | hint: ...".
public struct EdgeExitError: Error, CustomStringConvertible {
    public let code: Int
    public let message: String
    public var description: String { message }

    static func last(_ code: Int32) -> EdgeExitError {
        EdgeExitError(code: Int(code), message: String(cString: ee_last_error()))
    }
}

public final class EarlyExitClassifier {
    /// Per sample: the predicted class, the exit that answered, and that exit's logits (n x numClasses).
    public struct Result {
        public let predictions: [Int64]
        public let exits: [Int32]
        public let logits: [Float]
    }

    /// One sample's shape: channels, height, width (pixels are NCHW float32, normalised as the manifest says).
    public let inputShape: [Int]
    public let numClasses: Int
    public let numExits: Int
    private let handle: OpaquePointer
    private let lock = NSLock()  // the C runtime owns its buffers: one call at a time

    /// Verifies the bundle (manifest against its JSON Schema, every file's sha256) and loads its segments.
    public init(bundleDirectory: URL) throws {
        guard let handle = ee_open(bundleDirectory.path) else {
            throw EdgeExitError.last(Int32(EE_ERR_BUNDLE))
        }
        var chw = [Int64](repeating: 0, count: 3)
        let status = ee_input_shape(handle, &chw)
        guard Int(status) == EE_OK else {
            ee_close(handle)
            throw EdgeExitError.last(status)
        }
        self.handle = handle
        inputShape = chw.map { Int($0) }
        numClasses = Int(ee_num_classes(handle))
        numExits = Int(ee_num_exits(handle))
    }

    deinit {
        ee_close(handle)
    }

    /// Classifies `count` samples laid out one after another in `pixels` (count x C x H x W floats).
    public func classify(_ pixels: [Float], count: Int) throws -> Result {
        let sampleSize = inputShape.reduce(1, *)
        guard count >= 1, pixels.count == count * sampleSize else {
            throw EdgeExitError(code: Int(EE_ERR_ARGUMENT), message:
                "classify: pixels has the wrong size | got: \(pixels.count) floats for count \(count) | " +
                "expected: count x \(inputShape.map(String.init).joined(separator: " x "))")
        }
        lock.lock()
        defer { lock.unlock() }
        var predictions = [Int64](repeating: 0, count: count)
        var exits = [Int32](repeating: 0, count: count)
        var logits = [Float](repeating: 0, count: count * numClasses)
        let status = pixels.withUnsafeBufferPointer { x in
            ee_run(handle, x.baseAddress, Int64(count), &predictions, &exits, &logits)
        }
        guard Int(status) == EE_OK else { throw EdgeExitError.last(status) }
        return Result(predictions: predictions, exits: exits, logits: logits)
    }

    /// Milliseconds each segment took in the last `classify` call.
    public func segmentMilliseconds() -> [Double] {
        lock.lock()
        defer { lock.unlock() }
        return (0..<numExits).map { ee_segment_ms(handle, Int32($0)) }
    }
}
