// tests/interop/kafkajs.js: a Kafka client helmq did not write (kafkajs, the
// JavaScript client; its default partitioner is Java's murmur2), for
// tests/partitioning.t. Installed by tests/lib/node-deps.sh under build/node.
//
//   node kafkajs.js BROKERS produce TOPIC KEY...          one record per key; prints "KEY<TAB>PARTITION"
//   node kafkajs.js BROKERS produce-file TOPIC KEY FILE   FILE's bytes as the value of one record
//   node kafkajs.js BROKERS read TOPIC COUNT [TIMEOUT_MS] reads until COUNT records; prints "PARTITION<TAB>KEY"
//
// Exits 1 on any error (printed on stderr), 2 on bad usage.
'use strict';
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const [brokers, mode, topic, ...rest] = process.argv.slice(2);
if (!brokers || !mode || !topic) {
    process.stderr.write('usage: kafkajs.js BROKERS produce|produce-file|read TOPIC ...\n');
    process.exit(2);
}
const kafka = new Kafka({ clientId: 'helmq-interop-kafkajs', brokers: brokers.split(','), logLevel: logLevel.NOTHING });

// The producer as an application would make it: the default partitioner.
async function produce(records) {
    const producer = kafka.producer();
    await producer.connect();
    for (const r of records) {
        const [meta] = await producer.send({ topic, acks: -1, messages: [r] });
        process.stdout.write(`${r.key}\t${meta.partition}\n`);
    }
    await producer.disconnect();
}

async function read() {
    const want = Number(rest[0]);
    const timeout = Number(rest[1] || 30000);
    const consumer = kafka.consumer({ groupId: `helmq-interop-${process.pid}-${Date.now()}` });
    const seen = [];
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`read ${seen.length} of ${want} records from ${topic}`)), timeout);
        consumer
            .run({
                eachMessage: async ({ partition, message }) => {
                    seen.push(`${partition}\t${message.key === null ? '' : message.key.toString('utf8')}`);
                    if (seen.length >= want) {
                        clearTimeout(timer);
                        resolve();
                    }
                },
            })
            .catch(reject);
    });
    await consumer.disconnect();
    process.stdout.write(seen.map((l) => l + '\n').join(''));
}

const modes = {
    produce: () => produce(rest.map((key) => ({ key, value: `kafkajs ${key}` }))),
    'produce-file': () => produce([{ key: rest[0], value: fs.readFileSync(rest[1]) }]),
    read,
};
if (!modes[mode]) {
    process.stderr.write(`kafkajs.js: unknown mode ${mode}\n`);
    process.exit(2);
}
modes[mode]().then(
    () => process.exit(0),
    (e) => {
        process.stderr.write(`kafkajs.js ${mode}: ${e.stack || e}\n`);
        process.exit(1);
    }
);
