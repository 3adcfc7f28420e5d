// Host-side driver of EarlyExitClassifier for tests/test_android_jvm.py: the module's Kotlin and JNI code on the
// desktop JVM, against libedgeexit built by targets/executorch.
//   java -Djava.library.path=DIR -cp app.jar:/usr/share/java/kotlin-stdlib.jar MainKt BUNDLE INPUT.f32 N
// Prints one JSON line (predictions, exits, logits, shapes, per-segment ms); on EdgeExitException prints its
// message to stderr and exits 1.
import dev.edgeexit.EarlyExitClassifier
import dev.edgeexit.EdgeExitException
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.system.exitProcess

fun main(args: Array<String>) {
    if (args.size != 3) {
        System.err.println("usage: MainKt BUNDLE INPUT.f32 N")
        exitProcess(2)
    }
    val n = args[2].toInt()
    val bytes = File(args[1]).readBytes()
    val pixels = FloatArray(bytes.size / 4)
    ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(pixels)
    try {
        EarlyExitClassifier(args[0]).use { classifier ->
            val r = classifier.classify(pixels, n)
            println("{\"predictions\": [${r.predictions.joinToString(", ")}], " +
                "\"exits\": [${r.exits.joinToString(", ")}], " +
                "\"logits\": [${r.logits.joinToString(", ")}], " +
                "\"num_classes\": ${classifier.numClasses}, \"num_exits\": ${classifier.numExits}, " +
                "\"input_shape\": [${classifier.inputShape.joinToString(", ")}], " +
                "\"segment_ms\": [${classifier.segmentMs().joinToString(", ")}]}")
        }
    } catch (e: EdgeExitException) {
        System.err.println("EdgeExitException: ${e.message}")
        exitProcess(1)
    }
}
