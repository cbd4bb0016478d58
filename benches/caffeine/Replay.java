// Replays the workload suite's streams (written by `suite -- --dump DIR`) through
// Caffeine, single-threaded, get then put on a miss, cold start counted, as
// benches/bin/suite.rs replays them through the Rust caches. Maintenance runs on the
// calling thread (executor Runnable::run), so evictions are applied at once.
//
//   javac -cp /usr/share/java/caffeine.jar -d /tmp/replay benches/caffeine/Replay.java
//   java -cp /usr/share/java/caffeine.jar:/tmp/replay Replay DIR
//
// Prints one line per workload and size: name, size, hit ratio in percent.

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

public final class Replay {
    public static void main(String[] args) throws IOException {
        Path dir = Path.of(args[0]);
        List<String> index = Files.readAllLines(dir.resolve("index.tsv"));
        byte[] value = new byte[16];
        for (String line : index) {
            String[] f = line.split("\t");
            ByteBuffer buf = ByteBuffer.wrap(Files.readAllBytes(dir.resolve(f[0])))
                    .order(ByteOrder.LITTLE_ENDIAN);
            long[] keys = new long[buf.remaining() / 8];
            buf.asLongBuffer().get(keys);
            for (int s = 2; s < f.length; s++) {
                long size = Long.parseLong(f[s]);
                Cache<Long, byte[]> cache = Caffeine.newBuilder()
                        .maximumSize(size)
                        .executor(Runnable::run)
                        .build();
                long hits = 0;
                for (long k : keys) {
                    if (cache.getIfPresent(k) != null) {
                        hits++;
                    } else {
                        cache.put(k, value);
                    }
                }
                System.out.printf("%s\t%d\t%.2f%n", f[1], size, 100.0 * hits / keys.length);
            }
        }
    }
}
