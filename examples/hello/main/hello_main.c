/*
 * hello: print a greeting on UART0 forever.
 *
 * Everything configurable comes from the sdkconfig (CONFIG_HELLO_*), which the
 * build script passes to the compiler as -D defines.
 */
#include <stdint.h>

#include "hello_soc.h"

#ifndef CONFIG_HELLO_GREETING
#error "CONFIG_HELLO_GREETING must be set in sdkconfig.defaults"
#endif
#ifndef CONFIG_HELLO_REPEAT_DELAY
#define CONFIG_HELLO_REPEAT_DELAY 1000000
#endif

extern uint32_t _bss_start[];
extern uint32_t _bss_end[];

void hello_main(void) __attribute__((noreturn));

/* Entry point: set up the stack, then run hello_main(). */
__attribute__((naked, noreturn, section(".text.entry"))) void _start(void)
{
    __asm__ volatile(
        ".option push\n"
        ".option norelax\n"
        "la sp, _stack_top\n"
        ".option pop\n"
        "j hello_main\n");
}

static void delay(uint32_t loops)
{
    for (volatile uint32_t i = 0; i < loops; i++) {
        /* busy wait */
    }
}

void hello_main(void)
{
    for (volatile uint32_t *p = _bss_start; p < _bss_end; p++) {
        *p = 0;
    }

    for (;;) {
        hello_uart_puts(CONFIG_HELLO_GREETING);
#ifdef CONFIG_HELLO_PRINT_TARGET
        hello_uart_puts(", world from " CONFIG_IDF_TARGET "!\r\n");
#else
        hello_uart_puts(", world!\r\n");
#endif
        hello_uart_puts("app version " CONFIG_APP_PROJECT_VER "\r\n");
        delay(CONFIG_HELLO_REPEAT_DELAY);
    }
}
